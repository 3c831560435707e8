//! Refresh-token families: `P:f:{<family>}`, rotated by one script (`lua/rotate.lua`).

use super::*;

impl RefreshStore for RedisStore {
    async fn start_family(
        &self,
        family: &str,
        jti: &str,
        now_ms: u64,
        expires_at_ms: u64,
        idle_ms: u64,
    ) -> Result<(), StoreError> {
        self.reserve(true, now_ms, expires_at_ms).await?;
        let key = format!("{}:f:{{{}}}", self.prefix, b64(&digest16(family)));
        let ttl = expires_at_ms.saturating_sub(now_ms).max(1);
        let jti = jti.to_owned();
        self.link
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HSET")
                    .arg(&key)
                    .arg(&[
                        ("c", jti),
                        ("u", now_ms.to_string()),
                        ("i", idle_ms.to_string()),
                    ])
                    .ignore()
                    .pexpire(&key, i64::try_from(ttl).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        let key = format!("{}:f:{{{}}}", self.prefix, b64(&digest16(family)));
        let r: String = self
            .invoke({
                let mut i = SCRIPTS.rotate.key(key);
                i.arg(presented).arg(next).arg(now_ms);
                i
            })
            .await?;
        Ok(match r.as_str() {
            "o" => Rotation::Rotated,
            "r" => Rotation::Reused,
            _ => Rotation::Gone,
        })
    }
}
