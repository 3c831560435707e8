//! The `ciba-gateway` command: `serve`, `check`, `keygen`, `hash-secret`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ciba_gateway::config::LogFormat;
use ciba_gateway::config::{RuntimeKind, SigningAlg};
use ciba_gateway::log_format::{JsonWithTraceId, TextWithTraceId};
use ciba_gateway::log_limit::LogLimit;
use ciba_gateway::serve::audit_webhook::{AuditLayer, audit_webhook};
use ciba_gateway::{Config, Engine, serve};
use clap::{Parser, Subcommand, ValueEnum};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::io::IsTerminal as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

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
        /// Log as JSON lines instead of text (as `log.format: json`).
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
        Command::Keygen { alg, out } => match ciba_gateway::generate_signing_key(alg.into()) {
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
            println!("{}", ciba_gateway::hash_secret(secret));
            ExitCode::SUCCESS
        }
    }
}

/// `check`: configuration errors exit 2; findings (what will not work, with its fix) exit 1.
fn check(config: &std::path::Path, online: bool) -> ExitCode {
    let engine = match Config::load(config)
        .map(|mut cfg| {
            // The registered clients' file belongs to the running gateway, which locks it:
            // checking a live configuration must not touch it.
            if let ciba_gateway::config::StoreConfig::Memory { clients_file, .. } = &mut cfg.store {
                *clients_file = None;
            }
            cfg
        })
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
        if engine.config().upstream.is_none() {
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

/// Request-duration buckets, seconds: from a cached poll (~20 µs) to a held one (30 s).
const DURATION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
    30.0,
];

/// The process's log: text (coloured only on a terminal) or JSON lines, filtered by `RUST_LOG`
/// (default `info`) and limited by one [`LogLimit`] for every line; and the audit trail's
/// webhook (`audit.webhook`), which takes the audit events whatever `RUST_LOG` says, the
/// repeatable ones held to a limit of their own.
fn init_log(json: bool, max_lines_per_sec: u32, audit: Option<AuditLayer>) -> LogLimit {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let limit = LogLimit::new(max_lines_per_sec);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    // Each line with the trace id of the request it was written for (no span needed).
    let layer = if json {
        layer
            .json()
            .map_event_format(JsonWithTraceId)
            .with_filter(filter.and(limit.clone()))
            .boxed()
    } else {
        layer
            .event_format(TextWithTraceId)
            .with_filter(filter.and(limit.clone()))
            .boxed()
    };
    let audit = audit.map(|a| {
        // The audit events are INFO: saying so keeps the process's maximum level (see LogLimit).
        let audit_only = tracing_subscriber::filter::filter_fn(|m| {
            m.target() == ciba_gateway::audit::TARGET
                || m.target() == ciba_gateway::audit::REPEAT_TARGET
        })
        .with_max_level_hint(tracing::level_filters::LevelFilter::INFO);
        a.with_filter(audit_only.and(LogLimit::new(max_lines_per_sec)))
    });
    tracing_subscriber::registry()
        .with(layer)
        .with(audit)
        .init();
    limit
}

/// OTLP export of the gateway's spans (feature `otel`), configured as every OpenTelemetry SDK
/// is: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
/// (unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`); the protocol
/// (`http/protobuf`, default, or `http/json`), headers, timeout, sampler, batching, service name
/// and resource from the other `OTEL_*` variables. The service name defaults to `ciba-gateway`.
#[cfg(feature = "otel")]
fn start_trace_export() -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if endpoint.is_none()
        || var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    if let Some(other) = var("OTEL_TRACES_EXPORTER").filter(|v| !v.eq_ignore_ascii_case("otlp")) {
        return Err(format!(
            "OTEL_TRACES_EXPORTER={other}: this binary exports over OTLP only (otlp or none)"
        ));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    // The specification's default; the crate's would be JSON, built in beside it.
    if var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_none()
        && var("OTEL_EXPORTER_OTLP_PROTOCOL").is_none()
    {
        exporter = exporter.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("OTLP trace exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("ciba-gateway");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    ciba_gateway::trace::export_spans();
    Ok(Some(provider))
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
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let json = json_logs || cfg.log.format == LogFormat::Json;
    let (audit_layer, audit_sender, audit_flush) =
        match cfg.audit.webhook.as_ref().map(audit_webhook) {
            Some(Ok((layer, sender, flush))) => (Some(layer), Some(sender), Some(flush)),
            Some(Err(e)) => {
                eprintln!("audit.webhook.secret: {e}");
                return ExitCode::from(2);
            }
            None => (None, None, None),
        };
    let grace = std::time::Duration::from_secs(cfg.server.shutdown_grace_secs);
    let log_limit = init_log(json, cfg.log.max_lines_per_sec, audit_layer);
    #[cfg(feature = "otel")]
    let traces = match start_trace_export() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let metrics = match cfg.admin.listen {
        Some(addr) => match PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder)
        {
            Ok(recorder) => {
                let handle = recorder.handle();
                ciba_gateway::metrics::label_client_ids(cfg.admin.client_id_labels);
                if metrics::set_global_recorder(recorder).is_err() {
                    eprintln!("admin.listen: a metrics recorder was installed already");
                    return ExitCode::from(2);
                }
                Some((addr, handle))
            }
            Err(e) => {
                eprintln!("admin.listen: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    match serve::raise_file_limit() {
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
    if let Err(e) = serve::admin::start(
        Arc::clone(&engine),
        config,
        log_limit,
        metrics,
        audit_sender,
    ) {
        eprintln!("admin.listen: {e}");
        return ExitCode::from(2);
    }
    if engine.config().store.is_shared() {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(engine.check_store()),
            Err(e) => tracing::warn!(error = %e, "cannot check the store at start-up"),
        }
    }
    let served = match kind {
        RuntimeKind::Tower => serve::tower::run(engine),
        #[cfg(feature = "pingora")]
        RuntimeKind::Pingora => serve::pingora::run(engine),
        #[cfg(not(feature = "pingora"))]
        RuntimeKind::Pingora => Err(serve::ServeError::Setup(
            "runtime: pingora, but this binary was built without the `pingora` feature".into(),
        )),
    };
    // What the audit webhook still has to send goes before the process does.
    if let Some(left) = audit_flush.map(|f| f.wait(grace)).filter(|n| *n > 0) {
        tracing::error!(
            events = left,
            "audit events not sent to the webhook before the shutdown grace ran out"
        );
    }
    // The spans still in the exporter's batch go too (within its own export timeout).
    #[cfg(feature = "otel")]
    if let Some(Err(e)) = traces.map(|p| p.shutdown()) {
        tracing::warn!(error = %e, "the last spans could not be exported");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(serve::ServeError::Setup(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(serve::ServeError::Io(e)) => {
            tracing::error!(%listen, error = %e, "cannot serve");
            ExitCode::FAILURE
        }
    }
}
