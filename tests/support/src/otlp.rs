//! A real OTLP/HTTP endpoint, as an OpenTelemetry collector's receiver is: it takes
//! `POST /v1/traces` in the default encoding (protobuf) and keeps every span it was sent.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// One exported span, as a trace viewer shows it.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; empty for a root.
    pub parent_span_id: String,
    /// OTLP's `SpanKind` number (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// The string and integer attributes, as `key=value`.
    pub attributes: Vec<String>,
    /// The resource's `service.name`.
    pub service: String,
}

/// The running receiver.
pub struct Receiver {
    /// What to give as `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Every request body as it came, to look for what must never be exported.
    pub bodies: Arc<Mutex<Vec<Bytes>>>,
}

/// A string or integer attribute value as text.
fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Receiver {
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let (s, b) = (Arc::clone(&spans), Arc::clone(&bodies));
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let (s, b) = (Arc::clone(&s), Arc::clone(&b));
                async move {
                    if headers.get("content-type").and_then(|v| v.to_str().ok())
                        != Some("application/x-protobuf")
                    {
                        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
                    }
                    let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    b.lock().unwrap().push(body);
                    let mut got = s.lock().unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| text(a.value.as_ref()))
                            .unwrap_or_default();
                        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                            got.push(Span {
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                kind: span.kind,
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| format!("{}={}", a.key, text(a.value.as_ref())))
                                    .collect(),
                                service: service.clone(),
                            });
                        }
                    }
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            endpoint,
            spans,
            bodies,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}
