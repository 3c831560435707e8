//! A standard CIBA client library — openid-client from npm, configured only from the gateway's
//! discovery document — completes the poll flow while an external authenticator approves through
//! the Keycloak-style HTTP channel. Requires `npm ci --prefix tests/client` (the README's test
//! command runs it).

mod common;

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use common::*;

#[tokio::test]
async fn openid_client_completes_the_poll_flow_with_an_external_authenticator() {
    let client_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client");
    assert!(
        client_dir.join("node_modules/openid-client").exists(),
        "openid-client is not installed: run `npm ci --prefix tests/client` (scripts/test does)"
    );
    let auth = Authenticator::start().await;
    let gw = start_real_time(|c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
    })
    .await;

    let mut child = tokio::process::Command::new("node")
        .current_dir(&client_dir)
        .args([
            "ciba-poll.mjs",
            &gw.url,
            BASIC_CLIENT.0,
            BASIC_CLIENT.1,
            "alice@example.com",
            "1234",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");

    // The user is reached through the authenticator...
    let call = auth.next_call().await;
    assert_eq!(call.body["login_hint"], "alice@example.com");
    assert_eq!(call.body["binding_message"], "1234");
    // ...the client polls and is told to wait...
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), stderr.next_line())
            .await
            .expect("the client polls")
            .unwrap()
            .unwrap_or_else(|| panic!("the client exited early: {seen:?}"));
        let pending = line.contains("authorization_pending");
        seen.push(line);
        if pending {
            break;
        }
    }
    // ...and the user approves on their device.
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);

    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client finishes")
        .unwrap();
    assert!(out.status.success(), "client failed: {seen:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(result["sub"], "sub-alice");
    assert_eq!(result["iss"], gw.url);
    assert_eq!(result["aud"], BASIC_CLIENT.0);
    assert_eq!(result["email"], "Alice@Example.com");
    assert_eq!(
        result["token_type"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert_eq!(result["has_access_token"], true);
}
