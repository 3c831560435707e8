//! Long polling at scale: 10 000 polls held at once cost memory only — no thread each, a few
//! kilobytes each (counted on the heap by this test's allocator) — and all of them are answered
//! when the runtime releases them. In process (the engine without sockets), so the figure is
//! the holds' and not the connections'.

use std::sync::Arc;

use bytes::Bytes;
use ciba_gateway::{EngineRequest, Outcome, Route};
use ciba_test_support as common;
use common::POST_CLIENT;
use http::{HeaderMap, HeaderValue, Method};

const HELD: usize = 10_000;

/// The system allocator, counting the bytes live on the heap.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_heap() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn form(path: &str, params: &[(&str, &str)]) -> EngineRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    EngineRequest {
        method: Method::POST,
        uri: path.parse().unwrap(),
        headers,
        body: Bytes::from(body),
        connection: Default::default(),
    }
}

fn json(o: Outcome) -> (u16, serde_json::Value) {
    match o {
        Outcome::Respond(r) => (
            r.status().as_u16(),
            serde_json::from_slice(r.body()).unwrap(),
        ),
        Outcome::Forward(_) => panic!("forwarded"),
    }
}

/// The threads of this process.
fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn ten_thousand_held_polls_cost_only_memory_and_are_all_released() {
    let (engine, rt) = common::in_process(|c| {
        c.ciba.long_poll_secs = 120;
        // Room for all of them (in process: no connection is held).
        c.ciba.max_held_polls = Some(HELD);
        c.ciba.max_held_polls_per_client = HELD;
        c.server.max_connections = HELD + 1;
        c.limits.bc_per_user = None;
        c.limits.bc_per_client = None;
    });
    let engine = Arc::new(engine);
    rt.block_on(async {
        let mut ids = Vec::with_capacity(HELD);
        for _ in 0..HELD {
            let req = form(
                "/bc-authorize",
                &[
                    ("client_id", POST_CLIENT.0),
                    ("client_secret", POST_CLIENT.1),
                    ("scope", "openid"),
                    ("login_hint", "alice"),
                ],
            );
            let (status, body) = json(engine.handle(Route::Backchannel, req).await);
            assert_eq!(status, 200, "{body}");
            ids.push(body["auth_req_id"].as_str().unwrap().to_owned());
        }
        let (heap_before, threads_before) = (live_heap(), threads());
        let polls: Vec<_> = ids
            .iter()
            .map(|id| {
                let req = form(
                    "/token",
                    &[
                        ("grant_type", "urn:openid:params:grant-type:ciba"),
                        ("client_id", POST_CLIENT.0),
                        ("client_secret", POST_CLIENT.1),
                        ("auth_req_id", id),
                    ],
                );
                let engine = Arc::clone(&engine);
                tokio::spawn(async move { json(engine.handle(Route::Token, req).await) })
            })
            .collect();
        while engine.held_polls() != HELD {
            tokio::task::yield_now().await;
        }
        let (heap_held, threads_held) = (live_heap(), threads());
        let per_poll = (heap_held - heap_before) / HELD as isize;
        eprintln!("{HELD} held polls: {per_poll} heap bytes each (task, request, wake-up), {threads_held} threads");
        assert_eq!(threads_held, threads_before, "a thread per held poll");
        // A held poll is a task and a registration on the store's wake-up: a few KB at most
        // (4.7 KB measured on 2026-12-03; 15 KB while the Redis store's futures were inlined
        // into every poll's state machine, 16.4 KB before the other flows were boxed).
        assert!(per_poll < 8 * 1024, "{per_poll} bytes per held poll");
        engine.shutdown();
        for p in polls {
            let (status, body) = p.await.unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("authorization_pending"))
            );
        }
        assert_eq!(engine.held_polls(), 0);
    });
}
