//! A real webhook receiver for the tests: records what it gets, answers with given statuses.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

/// A webhook receiver answering with `statuses` in turn (the last one repeats).
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

pub async fn receiver(statuses: Vec<u16>) -> Receiver {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let g = Arc::clone(&g);
            let statuses = statuses.clone();
            async move {
                let mut g = g.lock().unwrap();
                let status = statuses[g.len().min(statuses.len() - 1)];
                g.push(Received { headers, body });
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, got }
}
