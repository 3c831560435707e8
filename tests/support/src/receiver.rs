//! A real HTTPS server playing a ping client's notification endpoint: it presents a certificate
//! from a test CA, records every call (bearer, body), and answers each with the next status of a
//! script (the last one repeats). A `302` carries a `Location`, to show it is not followed; a
//! `0` drops the connection after reading the request, without an answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::pki::Pki;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// One call the endpoint received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The bearer token of the `Authorization` header.
    pub bearer: String,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body, parsed as JSON.
    pub body: serde_json::Value,
    /// The request target (path and query).
    pub path: String,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
}

/// The running endpoint.
pub struct Receiver {
    /// Its URL (`https://localhost:PORT/cb`).
    pub url: String,
    /// The CA that issued its certificate (PEM file).
    pub ca_file: String,
    calls: tokio::sync::Mutex<mpsc::UnboundedReceiver<Call>>,
    count: Arc<Mutex<usize>>,
    _pki: Pki,
}

impl Receiver {
    /// Starts the endpoint answering with `script`, over HTTPS.
    pub async fn start(script: &[u16]) -> Self {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            script,
            true,
        )
        .await
    }

    /// Starts the endpoint on `listener`, over HTTPS or (for development configurations) plain
    /// HTTP.
    pub async fn start_on(listener: TcpListener, script: &[u16], tls: bool) -> Self {
        let pki = Pki::new();
        let acceptor = tls.then(|| pki.acceptor());
        let scheme = if tls { "https" } else { "http" };
        let url = format!(
            "{scheme}://localhost:{}/cb",
            listener.local_addr().unwrap().port()
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(Mutex::new(0usize));
        let script = script.to_vec();
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let io: Box<dyn Io> = match &acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(tls) => Box::new(tls),
                        Err(_) => continue,
                    },
                    None => Box::new(tcp),
                };
                let (tx, seen, script) = (tx.clone(), Arc::clone(&seen), script.clone());
                // One connection may carry several calls (keep-alive, as real endpoints do).
                tokio::spawn(async move {
                    let mut io = BufReader::new(io);
                    loop {
                        let (mut bearer, mut content_type, mut len, mut path) =
                            (String::new(), String::new(), 0, None);
                        let mut traceparent = None;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            if path.is_none() {
                                // The request line: METHOD target VERSION.
                                path = l.split(' ').nth(1).map(str::to_owned);
                                continue;
                            }
                            let lower = l.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap_or(0);
                            } else if lower.starts_with("authorization:") {
                                bearer = l["authorization:".len()..]
                                    .trim()
                                    .strip_prefix("Bearer ")
                                    .unwrap_or_default()
                                    .to_owned();
                            } else if let Some(v) = lower.strip_prefix("content-type:") {
                                content_type = v.trim().to_owned();
                            } else if let Some(v) = lower.strip_prefix("traceparent:") {
                                traceparent = Some(v.trim().to_owned());
                            }
                        }
                        let mut body = vec![0; len];
                        if io.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let n = {
                            let mut c = seen.lock().unwrap();
                            *c += 1;
                            *c - 1
                        };
                        let status = script[n.min(script.len() - 1)];
                        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        let _ = tx.send(Call {
                            bearer,
                            content_type,
                            body,
                            path: path.unwrap_or_default(),
                            traceparent,
                        });
                        if status == 0 {
                            // Gone mid-call: the request was read, no answer comes.
                            return;
                        }
                        let extra = if status == 302 {
                            "location: https://localhost:9/elsewhere\r\n"
                        } else {
                            ""
                        };
                        let resp =
                            format!("HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n");
                        if io.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = io.get_mut().flush().await;
                    }
                });
            }
        });
        Self {
            url,
            ca_file: pki.path("ca.pem"),
            calls: tokio::sync::Mutex::new(rx),
            count,
            _pki: pki,
        }
    }

    /// The next call (waits for it, up to 20 s).
    pub async fn next_call(&self) -> Call {
        tokio::time::timeout(Duration::from_secs(20), self.calls.lock().await.recv())
            .await
            .expect("the notification endpoint was called")
            .expect("open")
    }

    /// How many calls have been received so far.
    pub fn calls_so_far(&self) -> usize {
        *self.count.lock().unwrap()
    }
}
