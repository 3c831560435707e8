//! The `ciba-gateway` binary as deployed: a YAML file, `check` first, then `serve`, stopped
//! when the handle is dropped. Suites pass the binary's path (`env!("CARGO_BIN_EXE_ciba-gateway")`,
//! which only an integration test of the gateway's own package can name).

use std::process::{Child, Command, Stdio};

/// A running gateway process.
pub struct Running {
    pub child: Child,
    pub port: u16,
    cfg: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.cfg);
    }
}

impl Running {
    /// Starts `bin` with `yaml` (which must listen on `port`) after `ciba-gateway check`
    /// accepted it, and waits until it accepts connections.
    pub fn start(bin: &str, port: u16, yaml: &str) -> Self {
        let cfg = std::env::temp_dir().join(format!("ciba-gw-{}.yaml", crate::random_token()));
        std::fs::write(&cfg, yaml).unwrap();
        let check = Command::new(bin)
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::eventually_blocking("the gateway listens", || {
            assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port, cfg }
    }
}
