//! The one place logging and metrics start: an `EnvFilter` from `RUST_LOG` (default `info`),
//! JSON logs on stderr, and one Prometheus registry with the HTTP metrics every service shares.

pub mod requests;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

/// Flushes and stops span export on drop; keep it alive for the life of the process.
#[must_use]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Sends the spans recorded so far (tests and shutdown).
    pub fn flush(&self) {
        if let Some(p) = self.provider.clone() {
            // The exporter's HTTP client blocks: never on an async runtime thread.
            let _ = std::thread::spawn(move || p.force_flush()).join();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = std::thread::spawn(move || p.shutdown()).join();
        }
    }
}

/// Starts logging for `service`, and OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init(service: &str) -> Guard {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    init_with(service, endpoint.as_deref())
}

/// Like [`init`], with the OTLP/HTTP endpoint given (e.g. `http://collector:4318`).
pub fn init_with(service: &str, otlp_endpoint: Option<&str>) -> Guard {
    // W3C trace context: an incoming `traceparent` becomes the parent of the request's span.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = otlp_endpoint.and_then(|ep| {
        let url = format!("{}/v1/traces", ep.trim_end_matches('/'));
        let name = service.to_string();
        // Built on a plain thread: the blocking HTTP client may not be created or dropped on
        // an async runtime thread.
        let built = std::thread::spawn(move || -> Result<SdkTracerProvider, String> {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(otlp_http_client()?)
                .with_endpoint(url)
                .build()
                .map_err(|e| e.to_string())?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build();
            Ok(SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build())
        })
        .join();
        match built {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                eprintln!("telemetry: OTLP export disabled: {e}");
                None
            }
            Err(_) => None,
        }
    });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                // The request span's fields (request id, route, status) on every log line.
                .with_current_span(true)
                .with_span_list(false),
        )
        .with(otel)
        .try_init();
    tracing::info!(service, otlp = provider.is_some(), "telemetry started");
    Guard { provider }
}

/// The exporter's HTTP client: https:// collectors are checked against the system's CAs plus
/// the PEM bundles in `SSL_CERT_FILE` and `OTEL_EXPORTER_OTLP_CERTIFICATE` (the OpenTelemetry
/// variable). Built on a plain thread (blocking client).
fn otlp_http_client() -> Result<reqwest_otlp::blocking::Client, String> {
    // ring, as the rest of the workspace; a provider another part installed first is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for var in ["SSL_CERT_FILE", "OTEL_EXPORTER_OTLP_CERTIFICATE"] {
        let Some(path) = std::env::var(var).ok().filter(|p| !p.trim().is_empty()) else {
            continue;
        };
        let pem = std::fs::read(&path).map_err(|e| format!("{var}={path}: {e}"))?;
        certs.extend(
            reqwest_otlp::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{var}={path}: not a PEM bundle: {e}"))?,
        );
    }
    reqwest_otlp::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| e.to_string())
}

/// Logs for a command-line tool (`loanctl`, whose `quickstart` runs the services in-process):
/// readable lines on stderr, from `RUST_LOG` or `warn` by default, so that problems show and
/// the tool's own output stays readable.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only on a terminal: piped into a file or a test, escape codes are noise.
    let _ = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
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

/// Registers `c` in the process-wide registry and returns it (a name registered twice keeps the
/// first; each metric is created once, behind a `OnceLock`).
pub fn register<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    let _ = registry().register(Box::new(c.clone()));
    c
}

/// Publishes a drift report as gauges: `score_psi`, `feature_psi{feature}` and
/// `drift_window_decisions` (what the figures are computed over). Features no longer reported
/// (after a model swap) are removed.
pub fn publish_drift(window: u64, score_psi: f64, features: &[(&str, f64)]) {
    struct Gauges {
        window: prometheus::IntGauge,
        score: prometheus::Gauge,
        features: prometheus::GaugeVec,
    }
    static GAUGES: std::sync::OnceLock<Gauges> = std::sync::OnceLock::new();
    let g = GAUGES.get_or_init(|| Gauges {
        window: register(
            prometheus::IntGauge::new(
                "drift_window_decisions",
                "Decisions in the drift window (DRIFT_WINDOW at most)",
            )
            .expect("valid metric"),
        ),
        score: register(
            prometheus::Gauge::new(
                "score_psi",
                "Population stability index of the score over the drift window against training",
            )
            .expect("valid metric"),
        ),
        features: register(
            prometheus::GaugeVec::new(
                prometheus::Opts::new(
                    "feature_psi",
                    "Population stability index of each feature over the drift window against training",
                ),
                &["feature"],
            )
            .expect("valid metric"),
        ),
    });
    g.window.set(i64::try_from(window).unwrap_or(i64::MAX));
    g.score.set(score_psi);
    g.features.reset();
    for (name, psi) in features {
        g.features.with_label_values(&[name]).set(*psi);
    }
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

/// The current span's W3C trace context, to carry inside a queued job.
pub fn current_trace_context() -> std::collections::HashMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier
}

/// Makes `span` continue the trace a job carried (see [`current_trace_context`]).
pub fn continue_trace(span: &tracing::Span, carrier: &std::collections::HashMap<String, String>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(parent);
}
