//! Real Redis servers for the shared-store suites: Debian's `redis-server` (installed by
//! `scripts/test`), started on free loopback ports in a temporary directory, stopped on drop.
//! A single node (append-only file fsynced on every write, so a killed and restarted server
//! still holds what it acknowledged) and a three-master Cluster built with
//! `redis-cli --cluster create`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::upstream::free_port;

/// `redis-server`, `redis-cli`: Debian's, or (`CIBA_REDIS_SERVER`) another server binary that
/// speaks the same options, such as `valkey-server`.
fn binary(name: &str) -> String {
    if name == "redis-server"
        && let Ok(server) = std::env::var("CIBA_REDIS_SERVER")
    {
        return server;
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} is not installed: scripts/test installs Debian's redis-server package")
}

/// Sends one inline command and returns the reply as text (an array reply is whatever arrived
/// before a moment of quiet; enough to search with `contains`).
pub fn ask(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        // Quiet for 200 ms after the first bytes: the reply is complete.
        let quiet = if got.is_empty() { 2000 } else { 200 };
        s.set_read_timeout(Some(Duration::from_millis(quiet)))
            .ok()?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&got);
        if text.starts_with('+') || text.starts_with('-') || text.starts_with(':') {
            break;
        }
        if let Some(rest) = text.strip_prefix('$')
            && let Some((len, body)) = rest.split_once("\r\n")
            && len.parse::<usize>().is_ok_and(|l| body.len() >= l)
        {
            break;
        }
    }
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

/// One `redis-server` process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A single node as its users run it, plus `maxmemory-policy noeviction` (the store's
    /// documented requirement) and an fsync per write.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A single node with extra `--option value` arguments, on a free port: one taken between
    /// its pick and the server's bind (redis-server cannot pick its own) is a retry on another.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = Self {
            port: 0,
            dir: PathBuf::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        for _ in 0..5 {
            s.port = free_port();
            s.dir =
                std::env::temp_dir().join(format!("ciba-redis-{}-{}", std::process::id(), s.port));
            std::fs::create_dir_all(&s.dir).unwrap();
            if s.launch() {
                return s;
            }
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        panic!("redis-server exited before answering, on five ports in turn");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on `self.port` and waits until it answers: false when it exited first
    /// (its port was taken).
    fn launch(&mut self) -> bool {
        let mut cmd = Command::new(binary("redis-server"));
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self.child.insert(cmd.spawn().expect("redis-server starts"));
        let (port, own) = (self.port, format!("process_id:{}\r\n", child.id()));
        // Up when this process answers (not another that took the port first); a server with
        // `requirepass` answers NOAUTH, up all the same.
        let mut up = false;
        crate::eventually_blocking("redis-server to answer, or to exit", || {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            up = ask(port, "INFO server")
                .is_some_and(|r| r.contains(&own) || r.starts_with("-NOAUTH"));
            up
        });
        up
    }

    /// Kills the server (SIGKILL: no shutdown save) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (it reloads its append-only file).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.launch(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// `INFO <section>`'s field `name`.
    pub fn info(&self, section: &str, name: &str) -> Option<String> {
        let text = ask(self.port, &format!("INFO {section}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_owned))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), slots spread by `redis-cli`.
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes and joins them.
    pub fn start() -> Self {
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let mut create = Command::new(binary("redis-cli"));
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let port = n.port;
            crate::eventually_blocking("the cluster to be ok", || {
                ask(port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
            });
        }
        Self { nodes }
    }

    /// The seed URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// A master, one replica and one Sentinel watching them (quorum 1, a second of silence before
/// the master is judged down) — a failover in a few seconds.
pub struct RedisSentinel {
    /// The master as started (it is the one killed in a failover test).
    pub master: RedisServer,
    /// Its replica (the master after a failover).
    pub replica: RedisServer,
    sentinel: Child,
    /// The Sentinel's port.
    pub sentinel_port: u16,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts the three and waits until the Sentinel knows the master and its replica.
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ciba-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        let sentinel = Command::new(binary("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let (rport, mport) = (replica.port, master.port);
        crate::eventually_blocking("the replica to sync", || {
            ask(rport, "INFO replication").is_some_and(|r| r.contains("master_link_status:up"))
        });
        crate::eventually_blocking("the Sentinel to see the replica", || {
            ask(port, "SENTINEL replicas mymaster").is_some_and(|r| r.contains(&rport.to_string()))
                && ask(port, "SENTINEL get-master-addr-by-name mymaster")
                    .is_some_and(|r| r.contains(&mport.to_string()))
        });
        Self {
            master,
            replica,
            sentinel,
            sentinel_port: port,
            dir,
        }
    }

    /// Waits until the replica has everything the master acknowledged.
    pub fn wait_replicated(&self) {
        let offset = |port: u16, field: &str| {
            ask(port, "INFO replication").and_then(|r| {
                r.lines()
                    .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
            })
        };
        let (m, r) = (self.master.port, self.replica.port);
        crate::eventually_blocking("the replica to catch up", || {
            let mo = offset(m, "master_repl_offset:");
            mo.is_some() && mo == offset(r, "slave_repl_offset:")
        });
    }

    /// Kills the master and waits until the Sentinel names the replica instead.
    pub fn fail_over(&mut self) {
        self.master.kill();
        let (s, r) = (self.sentinel_port, self.replica.port);
        crate::eventually_blocking("the Sentinel to promote the replica", || {
            ask(s, "SENTINEL get-master-addr-by-name mymaster")
                .is_some_and(|a| a.contains(&r.to_string()))
        });
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
