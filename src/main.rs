//! The `ciba-gateway` command: `serve`, `check`, `keygen`, `hash-secret`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ciba_gateway::config::{RuntimeKind, SigningAlg};
use ciba_gateway::{Config, Engine};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// glibc malloc was ~11 % of the pingora engine's CPU when proxying; mimalloc's thread-local
/// free lists suit the proxy's many short-lived allocations.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ciba-gateway",
    version,
    about = "OpenID Connect CIBA in front of any OpenID provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a configuration file and print every problem with its field path.
    Check {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also fetch the upstream provider's discovery and JWKS as the gateway will, and report
        /// everything that will not work with this configuration, each with its fix.
        #[arg(long)]
        online: bool,
    },
    /// Generate a signing key (PKCS#8 PEM) for `tokens.keys`.
    Keygen {
        /// Algorithm.
        #[arg(long, value_enum, default_value_t = Alg::Es256)]
        alg: Alg,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Hash a client secret or user code with argon2id for the configuration file. Reads the
    /// secret from standard input so that it stays out of the shell history.
    HashSecret,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Es256,
    Eddsa,
    Rs256,
    Ps256,
}

impl From<Alg> for SigningAlg {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Es256 => SigningAlg::ES256,
            Alg::Eddsa => SigningAlg::EdDSA,
            Alg::Rs256 => SigningAlg::RS256,
            Alg::Ps256 => SigningAlg::PS256,
        }
    }
}

fn main() -> ExitCode {
    ciba_gateway::install_crypto_provider();
    match Cli::parse().command {
        Command::Serve { config, json_logs } => serve(config, json_logs),
        Command::Check { config, online } => check(&config, online),
        Command::Keygen { alg, out } => match ciba_gateway::tokens::generate_pem(alg.into()) {
            Ok(pem) => match out {
                None => {
                    print!("{pem}");
                    ExitCode::SUCCESS
                }
                Some(path) => match write_private(&path, &pem) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("cannot write {}: {e}", path.display());
                        ExitCode::FAILURE
                    }
                },
            },
            Err(e) => {
                eprintln!("key generation failed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::HashSecret => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                eprintln!("cannot read the secret from standard input");
                return ExitCode::FAILURE;
            }
            let secret = s.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                eprintln!("the secret is empty");
                return ExitCode::FAILURE;
            }
            println!("{}", ciba_gateway::secret::hash_secret(secret));
            ExitCode::SUCCESS
        }
    }
}

/// `check`: configuration errors exit 2; findings (what will not work, with its fix) exit 1.
fn check(config: &std::path::Path, online: bool) -> ExitCode {
    let engine = match Config::load(config)
        .and_then(Engine::new)
        .map_err(|e| e.to_string())
    {
        Ok(e) => e,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    let findings = if online {
        if engine.upstream().is_none() {
            eprintln!("--online: no upstream is configured; nothing to fetch");
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(engine.check_upstream()),
            Err(e) => {
                eprintln!("cannot start a runtime: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        engine.config_findings()
    };
    let paths = engine.paths();
    let shared = paths.shared();
    println!("issuer:      {}", engine.issuer());
    println!("discovery:   {}", paths.discovery);
    println!("backchannel: {}", paths.backchannel);
    println!(
        "token:       {}{}",
        shared.token,
        if online || engine.config().endpoints.token.is_some() {
            ""
        } else {
            " (until the provider's discovery says otherwise)"
        }
    );
    println!("userinfo:    {}", shared.userinfo);
    println!("jwks:        {}", paths.jwks);
    if findings.is_empty() {
        println!("{}: ok", config.display());
        return ExitCode::SUCCESS;
    }
    for f in &findings {
        eprintln!(
            "- {}
  fix: {}",
            f.problem, f.fix
        );
    }
    ExitCode::FAILURE
}

fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(pem.as_bytes())
}

fn serve(config: PathBuf, json_logs: bool) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match ciba_gateway::server::raise_file_limit() {
        Ok((before, after, hard)) => {
            tracing::info!(soft_before = before, soft = after, hard, "open file limit")
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open file limit"),
    }
    let listen = cfg.listen;
    let kind = cfg.runtime();
    let engine = match Engine::new(cfg) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match kind {
        RuntimeKind::Tower => serve_tower(listen, engine),
        #[cfg(feature = "pingora")]
        RuntimeKind::Pingora => serve_pingora(listen, engine),
        #[cfg(not(feature = "pingora"))]
        RuntimeKind::Pingora => {
            eprintln!("runtime: pingora, but this binary was built without the `pingora` feature");
            ExitCode::from(2)
        }
    }
}

/// pingora: its own runtimes and signal handling (SIGTERM graceful with the configured grace
/// period, SIGINT fast).
#[cfg(feature = "pingora")]
fn serve_pingora(listen: std::net::SocketAddr, engine: Arc<Engine>) -> ExitCode {
    use pingora::server::configuration::ServerConf;
    use pingora::server::{RunArgs, Server};

    let cfg = engine.config();
    let conf = ServerConf {
        threads: cfg
            .server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        grace_period_seconds: Some(cfg.server.shutdown_grace_secs),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: cfg
            .upstream
            .as_ref()
            .and_then(|u| u.ca_file.as_ref())
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let tls = cfg.tls.clone();
    let proxy = match ciba_gateway::pingora::CibaProxy::try_new(Arc::clone(&engine)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut service = ciba_gateway::pingora::Guarded::service(&server.configuration, proxy);
    let addr = listen.to_string();
    match tls {
        Some(t) => {
            let settings = pingora::listeners::tls::TlsSettings::intermediate(
                &t.cert_file.display().to_string(),
                &t.key_file.display().to_string(),
            );
            let mut settings = match settings {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tls: {e}");
                    return ExitCode::from(2);
                }
            };
            settings.enable_h2();
            service.add_tls_with_settings(&addr, None, settings);
        }
        None => service.add_tcp(&addr),
    }
    server.add_service(service);
    server.add_service(pingora::services::background::background_service(
        "upstream discovery",
        ciba_gateway::pingora::WarmUp(Arc::clone(&engine)),
    ));
    tracing::info!(%listen, issuer = engine.issuer(), runtime = "pingora", "ciba-gateway listening");
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}

/// hyper with the tower layer, forwarding with a hyper-based client; TLS on the listener with
/// rustls when configured.
fn serve_tower(listen: std::net::SocketAddr, engine: Arc<Engine>) -> ExitCode {
    let tls = match &engine.config().tls {
        Some(t) => match ciba_gateway::server::tls_acceptor(&t.cert_file, &t.key_file) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = engine.config().server.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().expect("a tokio runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(%listen, issuer = engine.issuer(), runtime = "tower", tls = tls.is_some(), "ciba-gateway listening");
        let served = match tls {
            Some(tls) => {
                ciba_gateway::server::serve_tls(listener, engine, tls, shutdown_signal()).await
            }
            None => ciba_gateway::server::serve(listener, engine, shutdown_signal()).await,
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
