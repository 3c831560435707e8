//! A minimal SMTP server on a real socket that accepts every message and hands it to the test
//! (the "real SMTP sink": the gateway's SMTP client speaks the real protocol to it).

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One message received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// Starts the sink; returns its port and the received messages. Recipients listed in `reject`
/// get a permanent 550.
pub async fn start(reject: &'static [&'static str]) -> (u16, mpsc::UnboundedReceiver<Mail>) {
    start_with(reject, None).await
}

/// How the sink secures sessions.
#[derive(Clone)]
pub enum SinkTls {
    /// Implicit TLS from the first byte (SMTPS).
    Implicit(tokio_rustls::TlsAcceptor),
    /// Plain greeting, `STARTTLS` offered and upgraded on request.
    StartTls(tokio_rustls::TlsAcceptor),
}

/// Like [`start`], with TLS as `tls` says.
pub async fn start_with(
    reject: &'static [&'static str],
    tls: Option<SinkTls>,
) -> (u16, mpsc::UnboundedReceiver<Mail>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    // A failed handshake (an untrusted certificate at the client) ends the session.
                    Some(SinkTls::Implicit(acceptor)) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            session(BufReader::new(s), tx, reject, None, true).await;
                        }
                    }
                    Some(SinkTls::StartTls(acceptor)) => {
                        if let Some(plain) =
                            session(BufReader::new(stream), tx.clone(), reject, Some(()), true)
                                .await
                            && let Ok(s) = acceptor.accept(plain).await
                        {
                            session(BufReader::new(s), tx, reject, None, false).await;
                        }
                    }
                    None => {
                        session(BufReader::new(stream), tx, reject, None, true).await;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// One SMTP session. With `offer_starttls`, a `STARTTLS` command ends it and hands back the
/// plain stream for the TLS handshake.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    tx: mpsc::UnboundedSender<Mail>,
    reject: &'static [&'static str],
    offer_starttls: Option<()>,
    greet: bool,
) -> Option<S> {
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, b: &[u8]) {
        let _ = s.get_mut().write_all(b).await;
        let _ = s.get_mut().flush().await;
    }
    if greet {
        send(&mut stream, b"220 sink ESMTP\r\n").await;
    }
    let (mut from, mut to, mut data) = (String::new(), Vec::new(), String::new());
    let mut in_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let l = line.trim_end_matches(['\r', '\n']).to_owned();
        if in_data {
            if l == "." {
                in_data = false;
                let _ = tx.send(Mail {
                    from: from.clone(),
                    to: to.clone(),
                    data: std::mem::take(&mut data),
                });
                send(&mut stream, b"250 queued\r\n").await;
            } else {
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            continue;
        }
        let upper = l.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if offer_starttls.is_some() {
                b"250-sink\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
            } else {
                b"250-sink\r\n250 8BITMIME\r\n"
            }
        } else if upper == "STARTTLS" && offer_starttls.is_some() {
            send(&mut stream, b"220 ready to start TLS\r\n").await;
            return Some(stream.into_inner());
        } else if upper.starts_with("MAIL FROM:") {
            from = l[10..].trim().to_owned();
            to.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = l[8..].trim().trim_matches(['<', '>']).to_owned();
            if reject.contains(&rcpt.as_str()) {
                b"550 no such user\r\n"
            } else {
                to.push(rcpt);
                b"250 ok\r\n"
            }
        } else if upper == "DATA" {
            in_data = true;
            b"354 go ahead\r\n"
        } else if upper == "QUIT" {
            send(&mut stream, b"221 bye\r\n").await;
            return None;
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 ok\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        send(&mut stream, reply).await;
    }
}

/// An e-mail notifier configuration for a plain-text sink on `port`.
pub fn email_config(
    port: u16,
    retry_initial_ms: u64,
    max_attempts: u32,
) -> ciba_gateway::config::EmailConfig {
    ciba_gateway::config::EmailConfig {
        host: "127.0.0.1".into(),
        port,
        tls: ciba_gateway::config::SmtpTls::None,
        ca_file: None,
        username: None,
        password: None,
        from: "Sign-in <noreply@gateway.example>".into(),
        timeout_ms: 3000,
        retry_initial_ms,
        max_attempts,
    }
}
