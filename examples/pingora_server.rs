//! A pingora `Server` built in user code, with the ready-made `CibaProxy` as one of its
//! services: the same gateway the `ciba-gateway` binary runs, for deployments that assemble
//! their own pingora. (To add CIBA to a `ProxyHttp` of your own, see `pingora_module.rs`.)
//!
//! ```text
//! ISSUER=http://127.0.0.1:8080 PORT=3000 node tests/upstream/provider.mjs &   # any OpenID provider
//! CIBA_MY_CLIENT_SECRET=supersecret cargo run --example pingora_server
//! curl -s http://127.0.0.1:8080/.well-known/openid-configuration
//! ```

use std::sync::Arc;

use ciba_gateway::proxy::CibaProxy;
use ciba_gateway::{Config, Engine};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::background::GenBackgroundService;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let config = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/config/upstream.yaml"))?;
    let listen = config.listen.to_string();
    let engine = Arc::new(Engine::new(config)?);

    // pingora builds its own runtimes: no #[tokio::main] here.
    let mut server = Server::new_with_opt_and_conf(
        None,
        ServerConf {
            threads: 2,
            ..ServerConf::default()
        },
    );
    server.bootstrap();
    let proxy = CibaProxy::try_new(engine)?;
    // The provider's nodes (`upstream.nodes`, or `upstream.url` alone), health-checked.
    let health = GenBackgroundService::new("health checks".into(), Arc::clone(proxy.nodes()));
    let mut ciba = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    ciba.add_tcp(&listen);
    server.add_service(ciba);
    server.add_service(health);
    server.run_forever()
}
