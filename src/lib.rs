//! sealpipe: bulk envelope encryption in the AWS Encryption SDK message format.
//!
//! Every output is an ESDK message (version 2, key-committing suite 0x0478 by default)
//! that the official SDKs and `aws-encryption-cli` decrypt, and sealpipe decrypts what
//! they write, in all eleven suites.
//!
//! The layers, from the bytes up:
//! - [`format`]: the pure message codec (no I/O, no keys);
//! - [`crypto`]: AES-GCM backends, key derivation and commitment, ECDSA, secret types;
//! - [`s3ec`]: reading what the Amazon S3 Encryption Client wrote;
//! - [`keys`]: keyrings that wrap and unwrap data keys;
//! - [`retry`]: backoff and rate limits for KMS and S3 calls;
//! - [`stream`]: whole messages over readers and writers, frames sealed on rayon;
//! - [`store`] and [`pipeline`]: many objects, concurrently, with reports;
//! - [`escape`]: printing names and bytes we do not control.
//!
//! ```
//! use sealpipe::{keys, stream, format::{AlgorithmSuite, EncryptionContext}};
//! # fn main() -> Result<(), sealpipe::Error> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let keyring = keys::RawAesKeyring::new("my-namespace", "my-key", vec![7u8; 32].into())
//!     .expect("valid key");
//! let context: EncryptionContext = [("purpose", "example")].into_iter().collect();
//! let materials = rt.block_on(keys::encryption_materials(
//!     &keyring,
//!     AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
//!     context,
//!     Default::default(),
//! ))?;
//! let mut message = Vec::new();
//! stream::encrypt_to_vec(&materials, &Default::default(), None, b"hello", &mut message)?;
//!
//! let mut input = &message[..];
//! let options = stream::DecryptOptions::default();
//! let (header, rest) = stream::read_header(&mut input, &options.limits)?;
//! let dm = rt.block_on(keys::decryption_materials(&keyring, &header.body, &Default::default()))?;
//! let mut plaintext = Vec::new();
//! let mut body = std::io::Read::chain(&rest[..], input);
//! stream::MessageDecryptor::new(header, &dm, &options)?.decrypt(&mut body, &mut plaintext)?;
//! assert_eq!(plaintext, b"hello");
//! # Ok(()) }
//! ```

// The pipeline's futures nest deeply (a benchmark's job, its objects, their listings,
// each page): a clean build computes their layouts past rustc's default query depth.
#![recursion_limit = "256"]

pub mod aws;
pub mod batch_operations;
pub mod bench;
pub mod bridge;
pub mod crypto;
mod error;
pub mod escape;
pub mod events;
pub mod format;
pub mod keys;
pub mod ops;
pub mod pipeline;
pub mod retry;
pub mod s3ec;
pub mod serve;
pub mod store;
pub mod stream;

pub use error::Error;
pub use stream::CommitmentPolicy;
