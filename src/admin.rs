//! The admin HTTP listener: `/metrics` (Prometheus text), `/health` (the process answers)
//! and `/ready` (the ledger's database answers). Also the instrumentation that counts
//! requests by command, CC-Request-Type and Result-Code and times them.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_codec::codes;
use tollgate_ledger::SqlLedger;
use tollgate_peer::{AnswerFuture, Application, Node, Request as DiameterRequest};

/// The process-wide Prometheus recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    pub fn install() -> anyhow::Result<Metrics> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tollgate_ledger_batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            )
            .context("metric buckets")?
            .set_buckets_for_metric(
                Matcher::Suffix("seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ],
            )
            .context("metric buckets")?
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        Ok(Metrics { handle })
    }
}

/// Wraps an application with request counters and a latency histogram.
pub struct Instrumented<A> {
    inner: Arc<A>,
    #[allow(dead_code)]
    metrics: Metrics,
}

impl<A> Instrumented<A> {
    pub fn new(inner: A, metrics: Metrics) -> Self {
        Instrumented {
            inner: Arc::new(inner),
            metrics,
        }
    }
}

fn request_type_label(v: Option<i32>) -> &'static str {
    match v {
        Some(1) => "INITIAL",
        Some(2) => "UPDATE",
        Some(3) => "TERMINATION",
        Some(4) => "EVENT",
        _ => "none",
    }
}

impl<A: Application> Application for Instrumented<A> {
    fn application_ids(&self) -> Vec<tollgate_codec::ApplicationId> {
        self.inner.application_ids()
    }

    fn handle(&self, request: DiameterRequest) -> AnswerFuture {
        let command = request.message.header.command.name().unwrap_or("other");
        let rt = request_type_label(
            request
                .message
                .find(codes::CC_REQUEST_TYPE)
                .and_then(|a| a.enumerated().ok()),
        );
        let span = tracing::info_span!(
            "request",
            session_id = request.message.session_id().unwrap_or(""),
            cc_request_number = request
                .message
                .find(codes::CC_REQUEST_NUMBER)
                .and_then(|a| a.u32().ok())
                .unwrap_or(0),
            cc_request_type = rt,
        );
        let fut = self.inner.handle(request);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let start = Instant::now();
                let answer = fut.await;
                let code = answer.result_code().map(|c| c.0).unwrap_or(0);
                metrics::histogram!("tollgate_request_duration_seconds", "command" => command)
                    .record(start.elapsed().as_secs_f64());
                metrics::counter!(
                    "tollgate_requests_total",
                    "command" => command,
                    "cc_request_type" => rt,
                    "result_code" => code.to_string()
                )
                .increment(1);
                tracing::debug!(result_code = code, "answered");
                answer
            },
            span,
        ))
    }
}

async fn ready(ledger: &SqlLedger) -> bool {
    let db = ledger.database();
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&db.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

fn text(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn render(metrics: &Metrics, node: &Node) -> String {
    let s = &node.stats;
    for (name, v) in [
        (
            "tollgate_connections_accepted_total",
            &s.connections_accepted,
        ),
        ("tollgate_connections_refused_total", &s.connections_refused),
        (
            "tollgate_diameter_requests_received_total",
            &s.requests_received,
        ),
        ("tollgate_duplicates_replayed_total", &s.duplicates_replayed),
        ("tollgate_too_busy_total", &s.too_busy),
        ("tollgate_protocol_errors_total", &s.protocol_errors),
    ] {
        metrics::gauge!(name).set(v.load(Ordering::Relaxed) as f64);
    }
    let mut by_state = std::collections::BTreeMap::<String, u32>::new();
    for (_, st) in node.peer_states() {
        *by_state.entry(format!("{st:?}")).or_default() += 1;
    }
    for st in [
        "Closed",
        "WaitConnAck",
        "WaitICea",
        "WaitConnAckElect",
        "WaitReturns",
        "ROpen",
        "IOpen",
        "Closing",
    ] {
        metrics::gauge!("tollgate_peers", "state" => st)
            .set(f64::from(by_state.get(st).copied().unwrap_or(0)));
    }
    metrics.handle.render()
}

/// Open reservations and the money they hold, read from the ledger at scrape time (the
/// database is the truth; another node may hold some of them).
async fn ledger_metrics(ledger: &SqlLedger) -> String {
    let db = ledger.database();
    let row = sqlx::query_as::<_, (i64, i64)>(
        "SELECT COUNT(*), CAST(COALESCE(SUM(pending_amount), 0) AS BIGINT) FROM session_credits",
    )
    .fetch_one(&db.pool)
    .await;
    match row {
        Ok((n, amount)) => format!(
            "# TYPE tollgate_open_reservations gauge\ntollgate_open_reservations {n}\n\
             # TYPE tollgate_open_reservations_amount_minor gauge\ntollgate_open_reservations_amount_minor {amount}\n"
        ),
        Err(_) => String::new(),
    }
}

/// Serves the admin endpoints until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    node: Arc<Node>,
    ledger: SqlLedger,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (metrics, node, ledger) = (metrics.clone(), Arc::clone(&node), ledger.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (metrics, node, ledger) = (metrics.clone(), Arc::clone(&node), ledger.clone());
                async move {
                    let r = match req.uri().path() {
                        "/metrics" => {
                            let mut body = render(&metrics, &node);
                            body.push_str(&ledger_metrics(&ledger).await);
                            text(200, body)
                        }
                        "/health" => text(200, "ok\n".into()),
                        "/ready" => {
                            if ready(&ledger).await {
                                text(200, "ready\n".into())
                            } else {
                                text(503, "ledger unavailable\n".into())
                            }
                        }
                        _ => text(404, "not found: try /metrics, /health or /ready\n".into()),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
