//! A minimal hyper HTTP/1.1 server on one worker thread: the upstream of the pass-through
//! benchmark (`benches/passthrough.sh`), the floor of the HTTP benchmarks. Answers every request
//! with a short body — or, with `hold`, never (each request is held, its connection open): the
//! floor under a held long poll in `benches/held_polls_rss.py`.
//!
//! ```text
//! cargo run --release --example hello_upstream -- 127.0.0.1:9000 [hold]
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let hold = std::env::args().nth(2).is_some_and(|a| a == "hold");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("hello upstream on {addr}");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    if hold {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the upstream\n",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
