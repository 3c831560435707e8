//! What a pending request costs the embedded store: 100 000 requests accepted through the
//! engine (bc-authorize in process, log channel), then the heap bytes (counted by this
//! benchmark's allocator) and the resident-set growth per request.
//!
//! cargo bench --bench store_memory

use std::sync::atomic::{AtomicIsize, Ordering};

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
    let hash = ciba_gateway::secret::hash_secret("s3cret");
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
}
