//! The embedded SQLite backend. CONTRACT STUB: keep the public signatures.

use std::path::Path;

use crate::{Result, Storage};

/// Opens (creating and migrating) the database at `path`, and returns every store.
pub fn open(_path: &Path) -> Result<Storage> {
    todo!()
}

/// An in-memory database, for tests.
pub fn open_in_memory() -> Result<Storage> {
    todo!()
}
