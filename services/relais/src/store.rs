//! Opens the configured storage backend.

use storage::{Storage, StorageError};

use crate::config::{Config, StorageBackend};

/// Opens (and migrates) the backend `[storage]` names: SQLite in `server.data_dir`, or
/// ScyllaDB.
pub async fn open(cfg: &Config) -> Result<Storage, StorageError> {
    match cfg.storage.backend {
        StorageBackend::Embedded => {
            let dir = &cfg.server.data_dir;
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
            })?;
            storage::sqlite::open(&crate::db_path(dir))
        }
        StorageBackend::Scylla => {
            let scylla = cfg
                .storage
                .scylla(&cfg.session)
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            storage::scylla::open(&scylla).await
        }
    }
}

/// `relais storage migrate`: brings the schema to this build's version and says which.
pub async fn migrate(cfg: &Config) -> Result<String, StorageError> {
    match cfg.storage.backend {
        StorageBackend::Embedded => {
            drop(open(cfg).await?);
            Ok(format!(
                "embedded database {} is at the current schema",
                crate::db_path(&cfg.server.data_dir).display()
            ))
        }
        StorageBackend::Scylla => {
            let scylla = cfg
                .storage
                .scylla(&cfg.session)
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            let session = storage::scylla::connect(&scylla).await?;
            let v = storage::scylla::migrate(&session, &scylla).await?;
            Ok(format!(
                "keyspace {} is at schema version {v}",
                scylla.keyspace
            ))
        }
    }
}
