//! Kept values, counters and rate-limit cells in Redis: `P:s:<kind>:{H}` (a value, `PSETEX`,
//! taken with `GETDEL`), `P:n:<name>:{H}` (a counter whose window starts at its first
//! increment, `lua/count.lua`), `P:rl:<limit>:{H}` (a GCRA arrival time, `lua/gcra.lua`) — `H`
//! the first 16 bytes of SHA-256 of the key, base64url.

use redis::AsyncCommands as _;

use super::{RedisStore, SCRIPTS, b64};
use crate::protocol::digest16;
use crate::store::{KeptStore, LimitStore, StoreError};

impl KeptStore for RedisStore {
    async fn put_value(
        &self,
        kind: &str,
        key: &str,
        value: String,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let k = format!("{}:s:{kind}:{{{}}}", self.prefix, b64(&digest16(key)));
        self.link
            .run(|mut c| async move { c.pset_ex::<_, _, ()>(k, value, ttl_ms.max(1)).await })
            .await
    }

    async fn take_value(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let k = format!("{}:s:{kind}:{{{}}}", self.prefix, b64(&digest16(key)));
        self.link
            .run(|mut c| async move { c.get_del(k).await })
            .await
    }

    async fn count(
        &self,
        name: &str,
        key: &str,
        add_window_ms: Option<u64>,
    ) -> Result<u64, StoreError> {
        let k = format!("{}:n:{name}:{{{}}}", self.prefix, b64(&digest16(key)));
        match add_window_ms {
            None => {
                let n: Option<u64> = self.link.run(|mut c| async move { c.get(k).await }).await?;
                Ok(n.unwrap_or(0))
            }
            Some(window) => {
                self.invoke({
                    let mut i = SCRIPTS.count.key(k);
                    i.arg(window.max(1));
                    i
                })
                .await
            }
        }
    }
}

impl LimitStore for RedisStore {
    async fn admit(
        &self,
        limit: &str,
        key: &str,
        now_ms: u64,
        interval_ms: u64,
        tolerance_ms: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        let k = format!("{}:rl:{limit}:{{{}}}", self.prefix, b64(&digest16(key)));
        let wait: i64 = self
            .invoke({
                let mut i = SCRIPTS.gcra.key(k);
                i.arg(now_ms).arg(interval_ms).arg(tolerance_ms);
                i
            })
            .await?;
        Ok(match u64::try_from(wait) {
            Ok(ms) => Err(ms.div_ceil(1000).max(1)),
            Err(_) => Ok(()),
        })
    }
}
