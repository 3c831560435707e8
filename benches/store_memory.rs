//! What a pending request costs the embedded store: 100 000 requests accepted through the
//! engine (bc-authorize in process, log channel), then the heap bytes (counted by this
//! benchmark's allocator) and the resident-set growth per request. Then moka's own floor: the
//! same 100 000 keys in a moka cache configured as the store's table (per-entry expiry, an
//! eviction listener, the same hasher) whose value is one shared pointer, with and without the
//! per-entry expiry.
//!
//! cargo bench --bench store_memory

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciba_gateway::clock::ManualClock;
use ciba_gateway::{Config, Engine, EngineRequest, Outcome, Route};
use http::{HeaderMap, HeaderValue, Method};

const REQUESTS: usize = 100_000;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

fn main() {
    ciba_gateway::install_crypto_provider();
    let hash = ciba_gateway::hash_secret("s3cret");
    let yaml = format!(
        "public_url: http://127.0.0.1:9\nchannel: {{ type: log }}\nlimits: {{ bc_per_user: null, bc_per_client: null }}\nstore: {{ type: memory, capacity: 200000 }}\nusers: {{ type: static, users: [{{ subject: u1, username: alice }}] }}\nclients:\n  - {{ client_id: c1, secret: \"{hash}\", token_endpoint_auth_method: client_secret_post }}\n"
    );
    let engine = Engine::with_clock(
        Config::from_yaml(&yaml).unwrap(),
        std::sync::Arc::new(ManualClock::new()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from_static(
        b"client_id=c1&client_secret=s3cret&scope=openid&login_hint=alice&binding_message=1234",
    );
    let request = || {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        EngineRequest {
            method: Method::POST,
            uri: http::Uri::from_static("/bc-authorize"),
            headers,
            body: body.clone(),
            connection: Default::default(),
        }
    };
    rt.block_on(async {
        // Warm: the client's verification cache, the store's tables.
        for _ in 0..1000 {
            engine.handle(Route::Backchannel, request()).await;
        }
        let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss());
        for _ in 0..REQUESTS {
            match engine.handle(Route::Backchannel, request()).await {
                Outcome::Respond(r) => assert_eq!(r.status(), 200),
                Outcome::Forward(_) => unreachable!(),
            }
        }
        let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss());
        println!(
            "{REQUESTS} pending requests (memory store): {} heap bytes each, {} RSS bytes each",
            (heap1 - heap0) / REQUESTS as isize,
            rss1.saturating_sub(rss0) / REQUESTS as u64
        );
    });
    moka_floor(true);
    moka_floor(false);
}

struct Lifetime;

impl moka::Expiry<[u8; 16], Arc<u64>> for Lifetime {
    fn expire_after_create(&self, _k: &[u8; 16], v: &Arc<u64>, _now: Instant) -> Option<Duration> {
        Some(Duration::from_secs(**v))
    }
}

/// What moka spends per entry before any request data: the value is one pointer to a shared
/// `u64`, so the bytes counted are the table's bookkeeping alone.
fn moka_floor(per_entry_expiry: bool) {
    let builder = moka::sync::Cache::builder().eviction_listener(|_k, _v, _cause| {});
    let cache: moka::sync::Cache<[u8; 16], Arc<u64>, foldhash::fast::RandomState> =
        if per_entry_expiry {
            builder.expire_after(Lifetime)
        } else {
            builder
        }
        .build_with_hasher(foldhash::fast::RandomState::default());
    let value = Arc::new(300u64);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss());
    for i in 0..REQUESTS as u128 {
        cache.insert(i.to_le_bytes(), Arc::clone(&value));
    }
    cache.run_pending_tasks();
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss());
    assert_eq!(cache.entry_count(), REQUESTS as u64);
    println!(
        "moka floor ({}): {} heap bytes each, {} RSS bytes each",
        if per_entry_expiry {
            "per-entry expiry, as the store"
        } else {
            "no expiry"
        },
        (heap1 - heap0) / REQUESTS as isize,
        rss1.saturating_sub(rss0) / REQUESTS as u64
    );
    // Kept: freed pages would be reused by the next measurement and hide its growth.
    std::mem::forget(cache);
}
