//! The shared store on Redis or Valkey: single node, Sentinel or Cluster.
//!
//! Keys (`P` is `store.key_prefix`; `H` is the first 16 bytes of SHA-256 of an id, base64url —
//! ids and handles are bearer secrets, so the server's key space never shows one):
//!
//! - `P:r:{H}` — one request: a hash of `c` (client), `e` (expiry ms), `s` (status: `p`ending,
//!   `a`pproved, `d`enied, `t`aken), `i` (current interval), `l` (last poll ms), `a` (the
//!   approval), `d` (delivery state), and the fixed fields `id`, `h` (handle), `u` (subject),
//!   `sc`, `t` (created ms), `n` (announced interval), `ac`, `bm`, `lh`, `nt` (when given) —
//!   one short value per field, so that Redis keeps the hash in its compact listpack encoding
//!   (values up to 64 bytes by default). Every transition touches this
//!   one key, in one Lua script (loaded once, called by hash): `{H}` is the Cluster hash tag.
//!   It expires by itself at the request's expiry plus `expired_grace_secs`.
//! - No handle index: an approval handle names its request's `H` itself
//!   ([`crate::protocol::approval_handle`]); the stored `h` is compared with the one presented
//!   (through SHA-1 digests in the script, so the comparison's timing reveals nothing).
//! - `{P}:cap` — live requests per minute of their drop time (the capacity); `{P}:fcap` the
//!   same for refresh families; `{P}:due` — the push requests whose expiry must be told to
//!   their client (sorted by expiry, members are key hashes), claimed by whichever replica
//!   sweeps first.
//! - `P:f:{<family>}` — a refresh-token family; `P:rl:<limit>:{<key>}` — a rate limit's
//!   arrival time; `P:n:uc:{<subject>}` — a user's wrong user codes in the lockout window;
//!   `P:s:login:{<state>}`, `P:s:consent:{<session>}` — the upstream-login sessions.
//! - `P:c:{H}` — a registered client (`clients.rs`; `H` hashes its client id).
//! - channel `P:decided` — the key hash of every decided or removed request.

mod clients;
mod conn;
mod expiry;
mod kept;
mod refresh;
mod wake;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::{AsyncCommands as _, Script};

use self::conn::{Link, Target};
use self::wake::{IdHash, Subscription, Waiters};
use super::{
    Approval, Decision, Delivery, Pacing, PendingRequest, PendingStore, PollOutcome, RefreshStore,
    ResolveError, Rotation, StoreError,
};
use crate::config::{Problems, RedisConfig, resolve_secret};
use crate::domain::{Callback, CallbackMode};
use crate::protocol::{AuthReqId, NotificationToken, Scope, digest16};

/// Width of a capacity bucket.
const BUCKET_MS: u64 = 60_000;

struct Scripts {
    poll: Script,
    take: Script,
    resolve: Script,
    cancel: Script,
    delivery: Script,
    reserve: Script,
    release: Script,
    rotate: Script,
    gcra: Script,
    count: Script,
    due: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    poll: Script::new(include_str!("lua/poll.lua")),
    take: Script::new(include_str!("lua/take.lua")),
    resolve: Script::new(include_str!("lua/resolve.lua")),
    cancel: Script::new(include_str!("lua/cancel.lua")),
    delivery: Script::new(include_str!("lua/delivery.lua")),
    reserve: Script::new(include_str!("lua/reserve.lua")),
    release: Script::new(include_str!("lua/release.lua")),
    rotate: Script::new(include_str!("lua/rotate.lua")),
    gcra: Script::new(include_str!("lua/gcra.lua")),
    count: Script::new(include_str!("lua/count.lua")),
    due: Script::new(include_str!("lua/due.lua")),
});

/// Pending requests, refresh families and rate limits in Redis, shared by every replica.
pub struct RedisStore {
    link: Arc<Link>,
    sub: Arc<Subscription>,
    prefix: String,
    capacity: u64,
    grace_ms: u64,
    listening: std::sync::OnceLock<()>,
    /// Dropped with the store: ends the subscription task.
    stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn b64(h: &IdHash) -> String {
    URL_SAFE_NO_PAD.encode(h)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected Redis reply ({what})"))
}

impl RedisStore {
    /// A store for `store: {type: redis}`; nothing is connected until the first operation
    /// (a server that is down at start-up is waited for, not fatal). Problems (secrets, CA
    /// file, URLs) are reported under their `store.*` paths.
    pub fn from_config(cfg: &RedisConfig) -> Result<Self, crate::config::ConfigErrors> {
        crate::install_crypto_provider();
        let mut problems = Problems::new();
        let password = cfg
            .password
            .as_ref()
            .and_then(|r| problems.take("store.password", resolve_secret(r)).flatten());
        let sentinel_password = cfg
            .sentinel
            .as_ref()
            .and_then(|s| s.password.as_ref())
            .and_then(|r| {
                problems
                    .take("store.sentinel.password", resolve_secret(r))
                    .flatten()
            });
        let root = cfg.ca_file.as_ref().and_then(|p| {
            problems.take(
                "store.ca_file",
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
            )
        });
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: root.clone(),
        };
        let info = |u: &url::Url| -> Result<redis::ConnectionInfo, String> {
            let mut info = redis::IntoConnectionInfo::into_connection_info(u.as_str())
                .map_err(|e| e.to_string())?;
            let mut r = info.redis_settings().clone();
            if let Some(user) = &cfg.username {
                r = r.set_username(user);
            }
            if let Some(p) = &password {
                r = r.set_password(p.expose());
            }
            info = info.set_redis_settings(r);
            Ok(info)
        };
        let client = |u: &url::Url| -> Result<redis::Client, String> {
            let i = info(u)?;
            if root.is_some() {
                redis::Client::build_with_tls(i, certs()).map_err(|e| e.to_string())
            } else {
                redis::Client::open(i).map_err(|e| e.to_string())
            }
        };
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let target = if let Some(u) = &cfg.url {
            problems.take("store.url", client(u)).map(Target::Node)
        } else if let Some(s) = &cfg.sentinel {
            // The master is reached as the Sentinels are: over TLS when they are.
            let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(node_settings(&cfg.username, password.as_ref()));
            if s.urls.first().is_some_and(|u| u.scheme() == "rediss") {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            let sentinels: Vec<_> = s
                .urls
                .iter()
                .map(|u| {
                    let mut i = redis::IntoConnectionInfo::into_connection_info(u.as_str())
                        .map_err(|e| e.to_string())?;
                    if let Some(p) = &sentinel_password {
                        let r = i.redis_settings().clone().set_password(p.expose());
                        i = i.set_redis_settings(r);
                    }
                    Ok::<_, String>(i)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| problems.push("store.sentinel.urls", e))
                .unwrap_or_default();
            problems
                .take(
                    "store.sentinel",
                    redis::sentinel::SentinelClient::build(
                        sentinels,
                        s.master.clone(),
                        Some(node),
                        redis::sentinel::SentinelServerType::Master,
                    )
                    .map_err(|e| e.to_string()),
                )
                .map(|c| Target::Sentinel(tokio::sync::Mutex::new(c)))
        } else {
            let mut seeds = Vec::new();
            let mut infos = Vec::new();
            for (i, u) in cfg.cluster.iter().enumerate() {
                let path = format!("store.cluster[{i}]");
                if let (Some(c), Some(inf)) = (
                    problems.take(path.clone(), client(u)),
                    problems.take(path, info(u)),
                ) {
                    seeds.push(c);
                    infos.push(inf);
                }
            }
            let mut b = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2);
            if let Some(user) = &cfg.username {
                b = b.username(user);
            }
            if let Some(p) = &password {
                b = b.password(p.expose());
            }
            if root.is_some() {
                b = b.certs(certs());
            }
            problems
                .take("store.cluster", b.build().map_err(|e| e.to_string()))
                .map(|client| Target::Cluster { client, seeds })
        };
        let prefix = cfg.key_prefix.clone();
        problems.finish(|| {
            let link = Arc::new(Link::new(target.expect("reported otherwise"), timeout));
            Self {
                sub: Arc::new(Subscription {
                    link: Arc::clone(&link),
                    waiters: Arc::default(),
                    channel: format!("{prefix}:decided"),
                    ready: tokio::sync::watch::channel(false).0,
                }),
                link,
                capacity: cfg.capacity,
                grace_ms: cfg.expired_grace_secs * 1000,
                prefix,
                listening: std::sync::OnceLock::new(),
                stop: tokio::sync::watch::channel(()).0,
            }
        })
    }

    fn request_key(&self, h: &IdHash) -> String {
        format!("{}:r:{{{}}}", self.prefix, b64(h))
    }

    fn cap_key(&self, families: bool) -> String {
        let which = if families { "fcap" } else { "cap" };
        format!("{{{}}}:{which}", self.prefix)
    }

    fn waiters(&self) -> &Waiters {
        &self.sub.waiters
    }

    /// Subscribes this instance to the decisions of the others, once, from inside the runtime.
    fn ensure_listening(&self) {
        self.listening.get_or_init(|| {
            tokio::spawn(wake::listen(
                Arc::downgrade(&self.sub),
                self.stop.subscribe(),
            ));
        });
    }

    /// Runs a script invocation within the link's deadline.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'static>,
    ) -> Result<T, StoreError> {
        self.link
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// Whether the server answers (readiness: `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.link
            .run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    /// The server's `maxmemory-policy`, where `CONFIG GET` is allowed (managed services often
    /// refuse it): `Ok(None)` then.
    pub async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        let r = self
            .link
            .once(|mut c| async move {
                Ok(redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async::<Vec<String>>(&mut c)
                    .await)
            })
            .await?;
        Ok(r.ok().and_then(|v| v.into_iter().nth(1)))
    }

    async fn reserve(
        &self,
        families: bool,
        now_ms: u64,
        drop_at_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.cap_key(families);
        let cap = self.capacity;
        let ok: i64 = self
            .invoke({
                let mut i = SCRIPTS.reserve.key(key);
                i.arg(now_ms).arg(drop_at_ms).arg(cap).arg(BUCKET_MS);
                i
            })
            .await?;
        if ok == 1 {
            Ok(())
        } else {
            Err(StoreError::Full)
        }
    }

    /// Gives back a request's place, in the background: it is bookkeeping, not the answer.
    fn release(&self, expires_at_ms: u64) {
        let (link, key, drop_at) = (
            Arc::clone(&self.link),
            self.cap_key(false),
            expires_at_ms + self.grace_ms,
        );
        tokio::spawn(async move {
            let r = link
                .run(|mut c| async move {
                    SCRIPTS
                        .release
                        .key(key)
                        .arg(drop_at)
                        .arg(BUCKET_MS)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "a request's place could not be given back; it frees at its expiry");
            }
        });
    }

    /// The request from its hash's fields (as `HGETALL` lists them, from `from` on).
    fn rebuild(v: &[String], from: usize) -> Result<PendingRequest, StoreError> {
        let get = |name: &str| {
            v.get(from..)
                .unwrap_or_default()
                .chunks_exact(2)
                .find(|kv| kv[0] == name)
                .map(|kv| kv[1].clone())
        };
        let need = |name: &str| get(name).ok_or_else(|| corrupt(name));
        let num = |name: &str| need(name)?.parse::<u64>().map_err(|_| corrupt(name));
        Ok(PendingRequest {
            id: AuthReqId::from_wire(&need("id")?),
            handle: need("h")?,
            client_id: need("c")?,
            subject: need("u")?,
            scope: Scope::parse(&need("sc")?).ok_or_else(|| corrupt("scope"))?,
            acr_values: get("ac"),
            binding_message: get("bm"),
            login_hint: get("lh"),
            created_at_ms: num("t")?,
            expires_at_ms: num("e")?,
            interval_secs: u32::try_from(num("n")?).map_err(|_| corrupt("interval"))?,
            callback: match (get("nm"), get("ne"), get("nt")) {
                (Some(m), Some(e), Some(t)) => Some(Callback {
                    mode: CallbackMode::parse(&m).ok_or_else(|| corrupt("callback mode"))?,
                    endpoint: url::Url::parse(&e).map_err(|_| corrupt("callback endpoint"))?,
                    token: NotificationToken::parse(&t).ok_or_else(|| corrupt("callback token"))?,
                }),
                _ => None,
            },
            // Absent from a request an older version stored: its work starts a new trace.
            trace: get("tp").and_then(|t| crate::trace::TraceContext::parse(t.as_bytes())),
        })
    }

    /// The approval stored with a request (listed as by `HGETALL`, from `from` on).
    fn approval_of(v: &[String], from: usize) -> Result<Approval, StoreError> {
        let a = v
            .get(from..)
            .unwrap_or_default()
            .chunks_exact(2)
            .find(|kv| kv[0] == "a")
            .ok_or_else(|| corrupt("approval"))?;
        serde_json::from_str(&a[1]).map_err(|_| corrupt("approval"))
    }
}

fn node_settings(
    user: &Option<String>,
    password: Option<&crate::secret::Secret>,
) -> redis::RedisConnectionInfo {
    let mut s = redis::RedisConnectionInfo::default();
    if let Some(u) = user {
        s = s.set_username(u);
    }
    if let Some(p) = password {
        s = s.set_password(p.expose());
    }
    s
}

fn word(v: &[String], i: usize) -> Result<&str, StoreError> {
    v.get(i)
        .map(String::as_str)
        .ok_or_else(|| corrupt("short reply"))
}

fn number(v: &[String], i: usize) -> Result<u64, StoreError> {
    word(v, i)?.parse().map_err(|_| corrupt("number"))
}

impl PendingStore for RedisStore {
    async fn create(&self, req: PendingRequest) -> Result<(), StoreError> {
        let lifetime = req.expires_at_ms.saturating_sub(req.created_at_ms);
        self.reserve(false, req.created_at_ms, req.expires_at_ms + self.grace_ms)
            .await?;
        let h = digest16(req.id.as_str());
        let key = self.request_key(&h);
        let ttl = lifetime + self.grace_ms;
        let mut fields: Vec<(&str, String)> = vec![
            ("c", req.client_id.clone()),
            ("e", req.expires_at_ms.to_string()),
            ("s", "p".to_owned()),
            ("i", req.interval_secs.to_string()),
            ("id", req.id.as_str().to_owned()),
            ("h", req.handle.clone()),
            ("u", req.subject.clone()),
            ("sc", req.scope.as_str().to_owned()),
            ("t", req.created_at_ms.to_string()),
            ("n", req.interval_secs.to_string()),
        ];
        for (name, value) in [
            ("ac", &req.acr_values),
            ("bm", &req.binding_message),
            ("lh", &req.login_hint),
        ] {
            if let Some(v) = value {
                fields.push((name, v.clone()));
            }
        }
        if let Some(t) = &req.trace {
            let tp = t.traceparent();
            fields.push(("tp", tp.to_str().unwrap_or_default().to_owned()));
        }
        if let Some(cb) = &req.callback {
            fields.push(("nm", cb.mode.as_str().to_owned()));
            fields.push(("ne", cb.endpoint.as_str().to_owned()));
            fields.push(("nt", cb.token.as_str().to_owned()));
        }
        self.link
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    // HSET with several fields (HMSET, what `hset_multiple` sends, is deprecated
                    // and not among the documented commands an ACL user is granted).
                    .cmd("HSET")
                    .arg(&key)
                    .arg(&fields)
                    .ignore()
                    .pexpire(&key, i64::try_from(ttl).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn poll(
        &self,
        id: &str,
        client_id: &str,
        now_ms: u64,
        pacing: Pacing,
    ) -> Result<PollOutcome, StoreError> {
        let key = self.request_key(&digest16(id));
        let pacing = match pacing {
            Pacing::Checked => "c",
            Pacing::Held => "h",
        };
        let v: Vec<String> = self
            .invoke({
                let mut i = SCRIPTS.poll.key(key);
                i.arg(client_id).arg(now_ms).arg(pacing);
                i
            })
            .await?;
        Ok(match word(&v, 0)? {
            "p" => PollOutcome::Pending,
            "s" => PollOutcome::SlowDown {
                interval_secs: u32::try_from(number(&v, 1)?).map_err(|_| corrupt("interval"))?,
            },
            "x" => {
                self.release(number(&v, 1)?);
                PollOutcome::Expired
            }
            "d" => {
                self.release(number(&v, 1)?);
                PollOutcome::Denied
            }
            "a" => {
                let req = Self::rebuild(&v, 1)?;
                self.release(req.expires_at_ms);
                PollOutcome::Approved(Box::new(req), Self::approval_of(&v, 1)?)
            }
            _ => PollOutcome::Unknown,
        })
    }

    async fn take(&self, id: &str, now_ms: u64) -> Result<PollOutcome, StoreError> {
        let key = self.request_key(&digest16(id));
        let v: Vec<String> = self
            .invoke({
                let mut i = SCRIPTS.take.key(key);
                i.arg(now_ms);
                i
            })
            .await?;
        Ok(match word(&v, 0)? {
            "p" => PollOutcome::Pending,
            "x" => PollOutcome::Expired,
            "d" => PollOutcome::Denied,
            "a" => {
                PollOutcome::Approved(Box::new(Self::rebuild(&v, 1)?), Self::approval_of(&v, 1)?)
            }
            _ => PollOutcome::Unknown,
        })
    }

    async fn resolve(
        &self,
        handle: &str,
        decision: Decision,
        now_ms: u64,
    ) -> Result<PendingRequest, ResolveError> {
        let h = crate::protocol::handle_target(handle).ok_or(ResolveError::NotFound)?;
        let key = self.request_key(&h);
        let (status, approval) = match &decision {
            Decision::Approved(a) => (
                "a",
                serde_json::to_string(a).map_err(|e| StoreError::Backend(e.to_string()))?,
            ),
            Decision::Denied => ("d", String::new()),
        };
        let channel = self.sub.channel.clone();
        let v: Vec<String> = self
            .invoke({
                let mut i = SCRIPTS.resolve.key(key);
                i.arg(now_ms)
                    .arg(status)
                    .arg(approval)
                    .arg(channel)
                    .arg(h.as_slice())
                    .arg(handle);
                i
            })
            .await?;
        match word(&v, 0)? {
            "ok" => {}
            "x" => return Err(ResolveError::Expired),
            _ => return Err(ResolveError::NotFound),
        }
        // The polls held here wake now; the other instances' through the channel.
        self.waiters().wake(&h);
        Ok(Self::rebuild(&v, 1)?)
    }

    async fn decided(&self, id: &str, now_ms: u64) {
        self.ensure_listening();
        let h = digest16(id);
        let key = self.request_key(&h);
        let pending = async {
            // Decisions published from now on reach this instance; earlier ones are read.
            self.sub.established().await;
            let state: Result<(Option<String>, Option<u64>), _> = self
                .link
                .run(|mut c| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg("s")
                        .arg("e")
                        .query_async(&mut c)
                        .await
                })
                .await;
            match state {
                Ok((Some(s), Some(expires))) if s == "p" => Some(expires),
                _ => None,
            }
        };
        self.waiters().until_decided(h, now_ms, pending).await;
    }

    async fn view(&self, handle: &str, now_ms: u64) -> Result<Option<PendingRequest>, StoreError> {
        let Some(h) = crate::protocol::handle_target(handle) else {
            return Ok(None);
        };
        let key = self.request_key(&h);
        let v: Vec<String> = self
            .link
            .run(|mut conn| async move { conn.hgetall(key).await })
            .await
            .map(|m: Vec<(String, String)>| m.into_iter().flat_map(|(k, v)| [k, v]).collect())?;
        if v.is_empty() {
            return Ok(None);
        }
        let req = Self::rebuild(&v, 0)?;
        // The whole handle, its secret half included, compared in constant time.
        let genuine: bool =
            subtle::ConstantTimeEq::ct_eq(req.handle.as_bytes(), handle.as_bytes()).into();
        let pending = v.chunks_exact(2).any(|kv| kv[0] == "s" && kv[1] == "p");
        Ok((genuine && pending && now_ms < req.expires_at_ms).then_some(req))
    }

    async fn cancel(&self, id: &AuthReqId) -> Result<(), StoreError> {
        let h = digest16(id.as_str());
        let (key, channel) = (self.request_key(&h), self.sub.channel.clone());
        let expires: Option<u64> = self
            .invoke({
                let mut i = SCRIPTS.cancel.key(key);
                i.arg(channel).arg(h.as_slice());
                i
            })
            .await?;
        self.waiters().wake(&h);
        if let Some(e) = expires {
            self.release(e);
        }
        Ok(())
    }

    async fn record_delivery(&self, id: &AuthReqId, delivery: Delivery) -> Result<(), StoreError> {
        let key = self.request_key(&digest16(id.as_str()));
        let state = match &delivery {
            Delivery::Pending => String::new(),
            d => serde_json::to_string(d).map_err(|e| StoreError::Backend(e.to_string()))?,
        };
        self.invoke::<i64>({
            let mut i = SCRIPTS.delivery.key(key);
            i.arg(state);
            i
        })
        .await
        .map(drop)
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let key = self.request_key(&digest16(id));
        let (s, d): (Option<String>, Option<String>) = self
            .link
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("s")
                    .arg("d")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match (s, d) {
            (None, _) => Ok(None),
            (Some(_), None) => Ok(Some(Delivery::Pending)),
            (Some(_), Some(d)) => serde_json::from_str(&d)
                .map(Some)
                .map_err(|_| corrupt("delivery")),
        }
    }
}
