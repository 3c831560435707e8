//! The smallest pingora reverse proxy: one `ProxyHttp` whose only phase picks the upstream.
//! No gateway code at all: the pass-through benchmark (`benches/passthrough.sh`) runs it as
//! the floor that any pingora-based proxy (ciba-gateway's pingora engine included) starts
//! from, next to nginx. With `answer`, its `request_filter` answers every request itself with
//! a short JSON body, as the gateway's module answers a poll: the floor of the pingora rows of
//! `benches/http.sh`. With `hold`, it reads each request and never answers it, its connection
//! open: the floor under a held long poll on the pingora runtime (`benches/held_polls_rss.py`).
//!
//! ```text
//! cargo run --release --example bare_pingora -- 127.0.0.1:9001 127.0.0.1:9000 1 [answer|hold]
//! #                                             listen         upstream       threads
//! ```

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

// The same allocator as the `ciba-gateway` binary, so that the comparison is like for like.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `request_filter` does with a request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing: it is proxied to the upstream.
    Forward,
    /// Reads it and answers it.
    Answer,
    /// Reads it and never answers it.
    Hold,
}

struct Bare(HttpPeer, Mode);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        if self.1 == Mode::Forward {
            return Ok(false);
        }
        // Read the request's body first, as the gateway reads a token request's.
        while session.read_request_body().await?.is_some() {}
        if self.1 == Mode::Hold {
            std::future::pending::<()>().await;
        }
        let body = bytes::Bytes::from_static(b"{\"error\":\"authorization_pending\"}");
        let mut head = pingora::http::ResponseHeader::build(400, Some(3))?;
        head.insert_header("content-type", "application/json")?;
        head.insert_header("cache-control", "no-store")?;
        head.set_content_length(body.len())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(self.0.clone()))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let upstream: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()
        .expect("the upstream as ip:port");
    let threads = args
        .next()
        .map_or(1, |t| t.parse().expect("a thread count"));
    let mode = match args.next().as_deref() {
        Some("answer") => Mode::Answer,
        Some("hold") => Mode::Hold,
        _ => Mode::Forward,
    };

    let mut server = Server::new_with_opt_and_conf(
        None,
        ServerConf {
            threads,
            ..ServerConf::default()
        },
    );
    server.bootstrap();
    let peer = HttpPeer::new(upstream, false, String::new());
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare(peer, mode));
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
