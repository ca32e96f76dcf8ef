//! sealpipe: bulk envelope encryption in the AWS Encryption SDK message format.

pub mod crypto;
pub mod format;
