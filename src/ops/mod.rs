//! The seed's operations, done safely (docs/operations.md): backup, restore, clean-up, deleting
//! a user.
//!
//! - [`archive`]: the backup file — a checked tar, optionally an age file.

pub mod archive;
