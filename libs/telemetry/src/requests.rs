//! The request log of every HTTP service: `tracing-actix-web`'s root span per request, with
//! one event for a request that failed, at a level that says who must act.
//!
//! `tracing-actix-web` logs every 4xx at `WARN` and every 5xx at `ERROR`. On a normal first
//! start that prints alarming lines for expected answers: the registry's 404 for a model not
//! registered yet, the API's 503 while no model is loaded. Here:
//! - 404 and 503 are `DEBUG` (something is not there or not ready yet; readiness shows it);
//! - other 4xx are `WARN` (a client sent something the service refused);
//! - other 5xx are `ERROR` (an operator must look).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{Error, ResponseError};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// Use as `TracingLogger::<RequestLog>::new()`.
pub struct RequestLog;

/// Where `tracing-actix-web` makes its root span (an `INFO` span named `HTTP request`): what
/// `RUST_LOG` must enable for requests to be traced (`info`, or `tracing_actix_web=info`).
const ROOT_SPAN_TARGET: &str = "tracing_actix_web::root_span_builder";

/// How loudly a failed request is logged.
pub fn level_for(status: StatusCode) -> tracing::Level {
    match status {
        StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => tracing::Level::DEBUG,
        s if s.is_client_error() => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    }
}

impl RootSpanBuilder for RequestLog {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // Its fields cost more than a prediction's JSON (the connection's addresses as strings,
        // the route, a trace id, the OpenTelemetry parent read from the headers), and they are
        // computed even when the filter drops the span: skip them when nobody records it.
        if !tracing::span_enabled!(target: ROOT_SPAN_TARGET, tracing::Level::INFO) {
            return Span::none();
        }
        DefaultRootSpanBuilder::on_request_start(request)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let failed: Option<(&dyn ResponseError, StatusCode)> = match outcome {
            Ok(response) => response
                .response()
                .error()
                .map(|e| (e.as_response_error(), response.status())),
            Err(e) => Some((e.as_response_error(), e.as_response_error().status_code())),
        };
        if let Some((error, status)) = failed {
            // The error's Display is the problem detail the client got: never applicant data.
            // (Not "request failed": that is the services' own log of an internal error, which
            // scripts/schemathesis.sh looks for.)
            let code = status.as_u16();
            match level_for(status) {
                tracing::Level::DEBUG => {
                    tracing::debug!(status = code, error = %error, "request not served");
                }
                tracing::Level::WARN => {
                    tracing::warn!(status = code, error = %error, "request refused");
                }
                _ => tracing::error!(
                    status = code,
                    error = %error,
                    "request answered with a server error"
                ),
            }
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::HttpMessage;
    use tracing_subscriber::layer::SubscriberExt;

    /// Under `RUST_LOG=filter`, for one request through the middleware: whether its handler
    /// ran in an enabled root span, and whether the connection's details had been worked out.
    async fn root_span(filter: &str) -> (bool, bool) {
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new(filter));
        let _default = tracing::subscriber::set_default(subscriber);
        let app = actix_web::test::init_service(
            actix_web::App::new()
                .wrap(tracing_actix_web::TracingLogger::<RequestLog>::new())
                .route(
                    "/",
                    actix_web::web::get().to(|req: actix_web::HttpRequest| async move {
                        let details = req
                            .extensions()
                            .get::<actix_web::dev::ConnectionInfo>()
                            .is_some();
                        let traced = !Span::current().is_disabled();
                        actix_web::HttpResponse::Ok().body(format!("{traced} {details}"))
                    }),
                ),
        )
        .await;
        let body = actix_web::test::call_and_read_body(
            &app,
            actix_web::test::TestRequest::get().uri("/").to_request(),
        )
        .await;
        let body = String::from_utf8(body.to_vec()).expect("text");
        let (traced, details) = body.split_once(' ').expect("two words");
        (traced == "true", details == "true")
    }

    #[actix_web::test]
    async fn a_request_span_nobody_records_is_not_built() {
        assert_eq!(root_span("warn").await, (false, false), "RUST_LOG=warn");
        assert_eq!(root_span("info").await, (true, true), "RUST_LOG=info");
        // The target named here is the one tracing-actix-web's span has.
        assert_eq!(
            root_span("warn,tracing_actix_web=info").await,
            (true, true),
            "RUST_LOG=warn,tracing_actix_web=info"
        );
    }

    #[test]
    fn expected_answers_are_quiet_and_server_faults_are_loud() {
        assert_eq!(level_for(StatusCode::NOT_FOUND), tracing::Level::DEBUG);
        assert_eq!(
            level_for(StatusCode::SERVICE_UNAVAILABLE),
            tracing::Level::DEBUG
        );
        assert_eq!(
            level_for(StatusCode::UNPROCESSABLE_ENTITY),
            tracing::Level::WARN
        );
        assert_eq!(
            level_for(StatusCode::INTERNAL_SERVER_ERROR),
            tracing::Level::ERROR
        );
        assert_eq!(level_for(StatusCode::BAD_GATEWAY), tracing::Level::ERROR);
    }
}
