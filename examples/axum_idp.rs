//! An existing axum identity provider — its own `/token` (client credentials) and its own
//! discovery document — gains CIBA by adding one layer.
//!
//! ```text
//! cargo run --example axum_idp
//! curl -s http://127.0.0.1:3000/.well-known/openid-configuration   # its fields + the CIBA fields
//! curl -s -d 'grant_type=client_credentials' http://127.0.0.1:3000/token   # still the app's
//! curl -s -d 'client_id=my-client&client_secret=supersecret&scope=openid&login_hint=alice' \
//!      http://127.0.0.1:3000/bc-authorize                                  # CIBA, from the layer
//! ```

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Form, Json, Router};
use ciba_gateway::tower::CibaLayer;
use ciba_gateway::{Config, Engine};
use serde_json::{Value, json};

const ADDR: &str = "127.0.0.1:3000";

/// The application as it was before CIBA: nothing here knows about the gateway.
fn existing_app() -> Router {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|| async {
                Json(json!({
                    "issuer": format!("http://{ADDR}"),
                    "authorization_endpoint": format!("http://{ADDR}/authorize"),
                    "token_endpoint": format!("http://{ADDR}/token"),
                    "grant_types_supported": ["authorization_code", "client_credentials"],
                    "response_types_supported": ["code"],
                }))
            }),
        )
        .route(
            "/token",
            post(|Form(form): Form<Vec<(String, String)>>| async move {
                let grant = form
                    .iter()
                    .find(|(k, _)| k == "grant_type")
                    .map(|(_, v)| v.as_str());
                match grant {
                    Some("client_credentials") => {
                        Json(json!({"access_token": "app-token", "token_type": "Bearer"}))
                    }
                    _ => Json(Value::from("unsupported_grant_type")),
                }
            }),
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ciba_gateway::install_crypto_provider();
    tracing_subscriber::fmt().init();
    let mut config = Config::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/quickstart.yaml"
    ))?;
    config.public_url = format!("http://{ADDR}").parse()?;
    let engine = Arc::new(Engine::new(config)?);

    let app = existing_app().layer(CibaLayer::new(engine));

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("axum IdP with CIBA on http://{ADDR}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
