//! The push requests whose expiry must be told to their client: `{P}:due`, a sorted set of
//! request key hashes by expiry, swept by every replica; a claim moves a member's score by its
//! lease, so a request whose replica died comes due again.

use super::*;
use crate::store::ExpiryQueue;

impl RedisStore {
    fn due_key(&self) -> String {
        format!("{{{}}}:due", self.prefix)
    }

    async fn unwatch(&self, member: Vec<u8>) -> Result<(), StoreError> {
        let key = self.due_key();
        self.link
            .run(|mut c| async move { c.zrem::<_, _, ()>(key, member).await })
            .await
    }
}

impl ExpiryQueue for RedisStore {
    async fn watch_expiry(&self, id: &AuthReqId, expires_at_ms: u64) -> Result<(), StoreError> {
        let (key, member) = (self.due_key(), digest16(id.as_str()));
        self.link
            .run(|mut c| async move {
                c.zadd::<_, _, _, ()>(key, member.as_slice(), expires_at_ms)
                    .await
            })
            .await
    }

    /// One that is gone already is settled here.
    async fn claim_expired(
        &self,
        now_ms: u64,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<PendingRequest>, StoreError> {
        let claimed: Vec<Vec<u8>> = self
            .invoke({
                let mut i = SCRIPTS.due.key(self.due_key());
                i.arg(now_ms).arg(max).arg(lease_ms);
                i
            })
            .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for member in claimed {
            let Ok(h) = IdHash::try_from(member.as_slice()) else {
                self.unwatch(member).await?;
                continue;
            };
            let key = self.request_key(&h);
            let v: Vec<(String, String)> = self
                .link
                .run(|mut c| async move { c.hgetall(key).await })
                .await?;
            if v.is_empty() {
                self.unwatch(member).await?;
                continue;
            }
            let v: Vec<String> = v.into_iter().flat_map(|(k, v)| [k, v]).collect();
            out.push(Self::rebuild(&v, 0)?);
        }
        Ok(out)
    }

    async fn settle_expired(&self, id: &AuthReqId) -> Result<(), StoreError> {
        self.unwatch(digest16(id.as_str()).to_vec()).await
    }
}
