//! The provider's nodes as the gateway's own HTTP clients reach them (the engine's requests,
//! the tower runtime's forwarding); the pingora runtime balances with pingora's own load
//! balancer over the same addresses.
//!
//! Each node gets a client of its own that resolves the provider's host name to the node's
//! address, and is sent requests at the node's port: the `Host` header and the TLS server name
//! stay the provider's name whatever node answers. Requests go to the nodes in turn; a node
//! that refuses a connection is passed over for [`DOWN_FOR`] (a passive health check), and a
//! request that could not connect moves on to the next node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

/// How long a node that refused a connection is passed over.
const DOWN_FOR: Duration = Duration::from_secs(5);

/// One node.
struct Node {
    port: u16,
    client: reqwest::Client,
    /// Passed over until then (`None`: up).
    down_until: std::sync::Mutex<Option<Instant>>,
}

/// The provider's nodes (one, `upstream.url` itself, without `upstream.nodes`).
pub(crate) struct Nodes {
    base: Url,
    nodes: Vec<Node>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("base", &self.base.as_str())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Nodes {
    /// Clients for `addrs` (or for `base` alone when there are none), each built from
    /// `builder()`. With addresses, `base` names the provider by a host name (checked with
    /// the configuration).
    pub(crate) fn new(
        base: &Url,
        addrs: &[SocketAddr],
        builder: impl Fn() -> reqwest::ClientBuilder,
    ) -> reqwest::Result<Self> {
        let node = |port, client| Node {
            port,
            client,
            down_until: std::sync::Mutex::new(None),
        };
        let nodes = if addrs.is_empty() {
            let port = base.port_or_known_default().unwrap_or(80);
            vec![node(port, builder().build()?)]
        } else {
            let host = base.host_str().unwrap_or_default();
            addrs
                .iter()
                .map(|a| Ok(node(a.port(), builder().resolve(host, *a).build()?)))
                .collect::<reqwest::Result<_>>()?
        };
        Ok(Self {
            base: base.clone(),
            nodes,
            next: AtomicUsize::new(0),
        })
    }

    /// The nodes in the order to try them for one request: the next in turn first, those
    /// passed over last.
    fn order(&self) -> impl Iterator<Item = &Node> {
        let start = if self.nodes.len() > 1 {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let now = Instant::now();
        let turn = (0..self.nodes.len()).map(move |i| &self.nodes[(start + i) % self.nodes.len()]);
        let up = move |n: &&Node| {
            n.down_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|t| t <= now)
        };
        turn.clone().filter(up).chain(turn.filter(move |n| !up(n)))
    }

    /// `path_and_query` at `node`.
    fn url(&self, node: &Node, path_and_query: &str) -> Url {
        let mut url = self.base.clone();
        let _ = url.set_port(Some(node.port));
        match path_and_query.split_once('?') {
            Some((p, q)) => {
                url.set_path(p);
                url.set_query(Some(q));
            }
            None => {
                url.set_path(path_and_query);
                url.set_query(None);
            }
        }
        url
    }

    /// Sends the request `make` builds for a node (its client, the URL of `path_and_query`
    /// there), moving on to the next node while one cannot be connected to; timed to the
    /// response's headers (`ciba_upstream_duration_seconds`): the gateway's own calls. `make` is called
    /// once per node tried, so the request must be one that can be built again.
    pub(crate) async fn send(
        &self,
        path_and_query: &str,
        make: impl Fn(&reqwest::Client, Url) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let started = std::time::Instant::now();
        let mut last = None;
        for node in self.order() {
            let req = make(&node.client, self.url(node, path_and_query));
            match crate::outbound::traced(req).send().await {
                Err(e) if e.is_connect() => {
                    self.pass_over(node);
                    last = Some(e);
                }
                done => {
                    crate::metrics::upstream_call(started.elapsed());
                    return done;
                }
            }
        }
        crate::metrics::upstream_call(started.elapsed());
        Err(last.expect("there is at least one node"))
    }

    /// Like [`Nodes::send`], for a request whose body is a stream that can be sent once:
    /// another node is tried only while the body has not been read (the connection failed
    /// first). With one node, the body goes straight through.
    #[cfg(feature = "server")]
    pub(crate) async fn send_once<B>(
        &self,
        path_and_query: &str,
        body: B,
        mut make: impl FnMut(&reqwest::Client, Url, Once<B>) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response>
    where
        B: http_body::Body<Data = bytes::Bytes>,
    {
        if self.nodes.len() == 1 {
            let node = &self.nodes[0];
            let once = Once {
                slot: None,
                taken: Some(body),
            };
            return make(&node.client, self.url(node, path_and_query), once)
                .send()
                .await;
        }
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
        let mut last = None;
        for node in self.order() {
            let once = Once {
                slot: Some(std::sync::Arc::clone(&slot)),
                taken: None,
            };
            match make(&node.client, self.url(node, path_and_query), once)
                .send()
                .await
            {
                Err(e) if e.is_connect() => {
                    self.pass_over(node);
                    last = Some(e);
                    if slot.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                        break; // the body went out: it cannot be sent again
                    }
                }
                done => return done,
            }
        }
        Err(last.expect("there is at least one node"))
    }

    /// Whether there is more than one node (a request may be tried twice).
    #[cfg(feature = "server")]
    pub(crate) fn several(&self) -> bool {
        self.nodes.len() > 1
    }

    fn pass_over(&self, node: &Node) {
        if self.nodes.len() > 1 {
            *node.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + DOWN_FOR);
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that is taken from a shared slot when first read, so that a request
    /// that failed before reading it can be sent to another node with the same body.
    pub(crate) struct Once<B> {
        slot: Option<std::sync::Arc<std::sync::Mutex<Option<B>>>>,
        #[pin]
        taken: Option<B>,
    }
}

impl<B> http_body::Body for Once<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let mut this = self.project();
        if this.taken.is_none()
            && let Some(slot) = this.slot.take()
        {
            let body = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            this.taken.set(body);
        }
        match this.taken.as_pin_mut() {
            Some(b) => b.poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u16) -> Nodes {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        Nodes::new(
            &"http://idp.example".parse().unwrap(),
            &addrs,
            reqwest::Client::builder,
        )
        .unwrap()
    }

    #[test]
    fn urls_keep_the_name_and_take_the_nodes_port() {
        let n = nodes(2);
        assert_eq!(
            n.url(&n.nodes[1], "/o/token/?a=b").as_str(),
            "http://idp.example:9001/o/token/?a=b"
        );
        let one = Nodes::new(
            &"https://idp.example".parse().unwrap(),
            &[],
            reqwest::Client::builder,
        )
        .unwrap();
        assert_eq!(
            one.url(&one.nodes[0], "/jwks").as_str(),
            "https://idp.example/jwks"
        );
    }

    #[test]
    fn nodes_take_turns_and_a_node_passed_over_comes_last() {
        crate::install_crypto_provider();
        let n = nodes(3);
        let ports = |n: &Nodes| n.order().map(|x| x.port).collect::<Vec<_>>();
        assert_eq!(ports(&n), [9000, 9001, 9002]);
        assert_eq!(ports(&n), [9001, 9002, 9000]);
        n.pass_over(&n.nodes[0]);
        assert_eq!(ports(&n), [9002, 9001, 9000]);
        assert_eq!(ports(&n), [9001, 9002, 9000]);
    }
}
