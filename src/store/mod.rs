//! Object sources and sinks. Today: local files and directory trees.

mod local;

pub use local::{Listing, LocalObject, StagedFile, list_local, plan_destination};
