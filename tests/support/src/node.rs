//! The standard CIBA client library, openid-client, run by Node.js from `tests/client` (its
//! scripts: `ciba-poll.mjs`, `ciba-ping.mjs`, `ciba-fapi.mjs`).

use std::process::Stdio;

/// The script `args[0]` in tests/client with the rest as its arguments, stdout and stderr
/// piped; killed when dropped.
pub fn client(args: &[&str]) -> tokio::process::Child {
    let client_dir = crate::repo_root().join("tests/client");
    assert!(
        client_dir.join("node_modules/openid-client").exists(),
        "openid-client is not installed: run `npm ci --prefix tests/client` (scripts/test does)"
    );
    tokio::process::Command::new("node")
        .current_dir(&client_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs")
}
