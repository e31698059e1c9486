//! Errors as RFC 9457 problem details (`application/problem+json`), mapped to HTTP once.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use features::FieldError;
use serde_json::json;

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the application is invalid: {} field error(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    InvalidBatch(String),
    #[error("no model is loaded yet")]
    NotReady,
    #[error("a valid API key is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ReloadFailed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("a batch file must be text/csv or application/x-ndjson")]
    UnsupportedBatchType,
    #[error("a training dataset must be uploaded as text/csv, or named as application/json {{\"dataset_path\": \"...\"}}")]
    UnsupportedTrainingType,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotFinished(String),
    /// The job storage is full (ENOSPC or a quota).
    #[error("{0}")]
    InsufficientStorage(String),
    /// The methods the path does take, for the `Allow` header.
    #[error("this endpoint does not take that method (it takes {0})")]
    MethodNotAllowed(&'static str),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// `Debug` is `Display`. The request log (`telemetry::requests`) logs a failed request's error,
/// and a field error's message quotes the applicant's value, which must never reach the logs:
/// `Display` says only how many fields were wrong (the client gets the details in the response).
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ApiError {
    /// The problem's status, type slug and title: one row per kind.
    fn kind(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Malformed(_) => (S::BAD_REQUEST, "malformed-request", "Malformed request"),
            ApiError::UnsupportedMediaType
            | ApiError::UnsupportedBatchType
            | ApiError::UnsupportedTrainingType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::TooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "request-too-large",
                "Request too large",
            ),
            ApiError::Invalid(_) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-application",
                "Invalid application",
            ),
            ApiError::InvalidBatch(_) => {
                (S::UNPROCESSABLE_ENTITY, "invalid-batch", "Invalid batch")
            }
            ApiError::NotReady => (S::SERVICE_UNAVAILABLE, "model-not-ready", "Model not ready"),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::ReloadFailed(_) => {
                (S::BAD_GATEWAY, "model-reload-failed", "Model reload failed")
            }
            ApiError::Unavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
            ),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::NotFinished(_) => (S::CONFLICT, "job-not-finished", "Job not finished"),
            ApiError::InsufficientStorage(_) => (
                S::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
            ),
            ApiError::MethodNotAllowed(_) => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Unexpected(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal-error", "Internal error")
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().0
    }

    fn error_response(&self) -> HttpResponse {
        let detail = match self {
            ApiError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let (status, slug, title) = self.kind();
        let mut body = json!({
            "type": format!("https://loan-scoring.dev/problems/{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::Invalid(errors) = self {
            body["errors"] = json!(errors);
        }
        let mut resp = HttpResponse::build(status);
        if matches!(self, ApiError::Unauthorized) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.insert_header(("Allow", *allow));
        }
        if matches!(self, ApiError::NotReady | ApiError::Unavailable(_)) {
            resp.insert_header(("Retry-After", "5"));
        }
        resp.content_type("application/problem+json")
            .body(body.to_string())
    }
}

/// A request refused at the border (wrong Host, cross-site write) as a problem document.
pub fn rejected(_: &actix_web::HttpRequest, r: &web_guard::Rejection) -> HttpResponse {
    match r {
        web_guard::Rejection::NotJson(_) => ApiError::UnsupportedMediaType.error_response(),
        other => ApiError::Forbidden(other.message()).error_response(),
    }
}
