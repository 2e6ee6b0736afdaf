//! The manifest journal (issue 17): the gateway's metadata store is one
//! redb file, and losing its disk must not lose the objects whose
//! fragments all survive. So every committed change of a bucket, a user or
//! an object version is also shipped to the backends, and
//! `shardgate recover` rebuilds the store from the backends alone.
//!
//! - The store writes each change's row image into its outbox in the
//!   transaction that commits the change (`shardgate_meta::journal`).
//! - [`Journal`] ships the outbox in batches: sealed with age to the
//!   gateway's recipients (its key and the offline recovery key), cut into
//!   the default policy's k + m shards, one blob per shard under a random
//!   name, placed like an object (`shardgate_core::journal` has the
//!   format). A batch's records leave the outbox once it holds its write
//!   quorum.
//! - Now and then it writes a checkpoint: every live row, the same way.
//!   Older checkpoints and the batches a checkpoint covers are deleted, so
//!   the journal stays about the size of the metadata.
//! - [`recover`] lists each backend's journal blobs, reads their headers,
//!   and replays the newest complete checkpoint and every batch after it
//!   into a new store.
//!
//! What a crash or a lost disk can cost: the records of the last batch
//! interval (1 s by default) that had not reached the backends. A
//! graceful stop ships everything first.

mod error;
mod recover;
mod writer;

pub use error::JournalError;
pub use recover::{Phase, Report, recover};
pub use writer::{Journal, JournalSettings, Placement, UnitPlacement};
