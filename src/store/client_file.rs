//! Registered clients for the memory backend, in an embedded database file (`redb`): a single
//! process needs no server to keep them, and a crash at any point leaves either the previous
//! or the new state (copy-on-write B-trees, committed with an fsync; a registration is answered
//! only after its commit). Every client is also held in memory, loaded once at start-up, so a
//! lookup never touches the disk. The file is locked: a second process cannot open it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{ClientStore, RegisteredClient, StoreError};

const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("registered_clients");

/// Registered clients in a file (or, from [`ClientFile::in_memory`], only in memory).
pub struct ClientFile {
    db: Option<Arc<redb::Database>>,
    map: RwLock<HashMap<String, Arc<RegisteredClient>>>,
    /// One write at a time, so that the file and the map apply writes in the same order.
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ClientFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFile")
            .field("durable", &self.db.is_some())
            .field("clients", &self.read().len())
            .finish()
    }
}

impl ClientFile {
    /// Opens (or creates) the file at `path`, with its directory, and loads every client.
    pub fn open(path: &Path) -> Result<Self, String> {
        let why = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| why(&e))?;
        }
        let db = redb::Database::create(path).map_err(|e| why(&e))?;
        // The table exists from the first start on, so that reads never meet its absence.
        let txn = db.begin_write().map_err(|e| why(&e))?;
        txn.open_table(CLIENTS).map_err(|e| why(&e))?;
        txn.commit().map_err(|e| why(&e))?;
        let mut map = HashMap::new();
        let read = db.begin_read().map_err(|e| why(&e))?;
        let table = read.open_table(CLIENTS).map_err(|e| why(&e))?;
        for row in table.iter().map_err(|e| why(&e))? {
            let (k, v) = row.map_err(|e| why(&e))?;
            let client = RegisteredClient::decode(v.value()).map_err(|e| why(&e))?;
            map.insert(k.value().to_owned(), Arc::new(client));
        }
        drop(table);
        drop(read);
        Ok(Self {
            db: Some(Arc::new(db)),
            map: RwLock::new(map),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Clients kept in memory only, lost with the process (library users and tests that
    /// choose no file).
    pub fn in_memory() -> Self {
        Self {
            db: None,
            map: RwLock::new(HashMap::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<RegisteredClient>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits `op` to the file (on the blocking pool: a commit waits for the disk).
    async fn commit(
        &self,
        op: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), StoreError> {
        let Some(db) = self.db.clone() else {
            return Ok(());
        };
        let failed = |e: &dyn std::fmt::Display| StoreError::Backend(format!("clients file: {e}"));
        tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(CLIENTS)?;
                op(&mut table)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))
    }
}

impl ClientStore for ClientFile {
    async fn client(&self, id: &str) -> Result<Option<Arc<RegisteredClient>>, StoreError> {
        Ok(self.read().get(id).cloned())
    }

    async fn put_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        let _one = self.writing.lock().await;
        let (id, bytes) = (client.client_id.clone(), client.encode());
        self.commit(move |t| {
            t.insert(id.as_str(), bytes.as_slice())?;
            Ok(())
        })
        .await?;
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client.client_id.clone(), Arc::new(client));
        Ok(())
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let _one = self.writing.lock().await;
        if !self.read().contains_key(id) {
            return Ok(false);
        }
        let key = id.to_owned();
        self.commit(move |t| {
            t.remove(key.as_str())?;
            Ok(())
        })
        .await?;
        Ok(self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_survive_reopening_the_file() {
        let dir =
            std::env::temp_dir().join(format!("ciba-clients-{}", crate::protocol::random_token()));
        let path = dir.join("clients.redb");
        let c = crate::store::contract::registered("c1");
        {
            let f = ClientFile::open(&path).unwrap();
            f.put_client(c.clone()).await.unwrap();
            f.put_client(crate::store::contract::registered("c2"))
                .await
                .unwrap();
            assert!(f.delete_client("c2").await.unwrap());
            // The lock: a second opener is refused while this one lives.
            assert!(ClientFile::open(&path).is_err());
        }
        let f = ClientFile::open(&path).unwrap();
        assert_eq!(f.client("c1").await.unwrap().as_deref(), Some(&c));
        assert_eq!(f.client("c2").await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn contract_client_file() {
        let dir =
            std::env::temp_dir().join(format!("ciba-clients-{}", crate::protocol::random_token()));
        let n = std::sync::atomic::AtomicUsize::new(0);
        crate::store::contract::run_clients(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("{i}.redb"));
            async move { ClientFile::open(&path).unwrap() }
        })
        .await;
        crate::store::contract::run_clients(|| async { ClientFile::in_memory() }).await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
