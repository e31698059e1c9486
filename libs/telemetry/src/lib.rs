//! The one place logging and metrics start: an `EnvFilter` from `RUST_LOG` (default `info`),
//! JSON logs on stderr, and one Prometheus registry with the HTTP metrics every service shares.

use tracing_subscriber::{fmt, EnvFilter};

/// Flushes on drop; keep it alive for the life of the process.
#[must_use]
pub struct Guard;

/// Starts logging for `service`. Safe to call once per process.
pub fn init(service: &str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
    tracing::info!(service, "logging started");
    Guard
}

/// Quiet, human-readable logs for tests (`RUST_LOG` still applies, default `warn`).
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// HTTP request metrics shared by every service: counts and latency per route and status.
pub struct HttpMetrics {
    pub requests: prometheus::IntCounterVec,
    pub duration: prometheus::HistogramVec,
}

/// The process-wide Prometheus registry (process CPU and memory collectors included).
pub fn registry() -> &'static prometheus::Registry {
    static REGISTRY: std::sync::OnceLock<prometheus::Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r = prometheus::Registry::new();
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        r
    })
}

/// The HTTP metrics, registered once.
pub fn http_metrics() -> &'static HttpMetrics {
    static METRICS: std::sync::OnceLock<HttpMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let _ = registry().register(Box::new(requests.clone()));
        let _ = registry().register(Box::new(duration.clone()));
        HttpMetrics { requests, duration }
    })
}

/// Everything in the registry, in Prometheus' text format.
pub fn render_metrics() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry().gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Actix middleware counting every request by route pattern (never the raw path, so no ids or
/// applicant data become labels), method and status, with its latency.
pub async fn record_http(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let start = std::time::Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.call(req).await?;
    let m = http_metrics();
    m.requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    m.duration
        .with_label_values(&[&route, &method])
        .observe(start.elapsed().as_secs_f64());
    Ok(resp)
}
