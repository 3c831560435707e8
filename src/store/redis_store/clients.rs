//! Registered clients in Redis: `P:c:{H}` (`H` the first 16 bytes of SHA-256 of the client id,
//! base64url) holds the record's one encoding, without expiry. Every lookup reads the server,
//! so a registration, an update or a deletion through one replica is what every other replica
//! sees next (the registry keeps the parsed client while the record's version is unchanged).

use std::sync::Arc;

use redis::AsyncCommands as _;

use super::{RedisStore, b64};
use crate::protocol::digest16;
use crate::store::{ClientStore, RegisteredClient, StoreError};

impl RedisStore {
    fn client_key(&self, id: &str) -> String {
        format!("{}:c:{{{}}}", self.prefix, b64(&digest16(id)))
    }
}

impl ClientStore for RedisStore {
    async fn client(&self, id: &str) -> Result<Option<Arc<RegisteredClient>>, StoreError> {
        let k = self.client_key(id);
        let bytes: Option<Vec<u8>> = self.link.run(|mut c| async move { c.get(k).await }).await?;
        bytes
            .map(|b| {
                RegisteredClient::decode(&b)
                    .map(Arc::new)
                    .map_err(StoreError::Backend)
            })
            .transpose()
    }

    async fn put_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        let (k, bytes) = (self.client_key(&client.client_id), client.encode());
        self.link
            .run(|mut c| async move { c.set::<_, _, ()>(k, bytes).await })
            .await
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let k = self.client_key(id);
        let n: u64 = self.link.run(|mut c| async move { c.del(k).await }).await?;
        Ok(n > 0)
    }
}
