//! Suites whose rules do not depend on the proxy runtime run on both.

use ciba_gateway::Config;
use ciba_gateway::config::RuntimeKind;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, start};
use crate::upstream;

/// Runs an `async fn case(kind: RuntimeKind)` on both proxy runtimes, as `case::pingora` and
/// `case::tower`.
#[macro_export]
macro_rules! both_runtimes {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pingora() {
                super::$case(ciba_gateway::config::RuntimeKind::Pingora).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tower() {
                super::$case(ciba_gateway::config::RuntimeKind::Tower).await
            }
        }
    )*};
}

/// The gateway on proxy runtime `kind` with the base configuration changed by `edit`, on a
/// manual clock: standalone on tower, in front of an echo upstream on pingora (which needs one).
/// For the suites whose rules do not depend on the runtime: they run on both.
pub async fn start_on(kind: RuntimeKind, edit: impl FnOnce(&mut Config)) -> Gateway {
    match kind {
        RuntimeKind::Tower => start(edit).await,
        RuntimeKind::Pingora => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo = upstream::echo_upstream().await;
            upstream::gateway_in_front(kind, listener, echo, edit).await
        }
    }
}
