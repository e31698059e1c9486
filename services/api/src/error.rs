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
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// `Debug` is `Display`. tracing-actix-web logs a failed request's error with `{:?}`, and a field
/// error's message quotes the applicant's value, which must never reach the logs: `Display` says
/// only how many fields were wrong (the client gets the details in the response).
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ApiError {
    fn slug(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed-request",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::TooLarge(_) => "request-too-large",
            ApiError::Invalid(_) => "invalid-application",
            ApiError::InvalidBatch(_) => "invalid-batch",
            ApiError::NotReady => "model-not-ready",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ReloadFailed(_) => "model-reload-failed",
            ApiError::Unavailable(_) => "service-unavailable",
            ApiError::UnsupportedBatchType | ApiError::UnsupportedTrainingType => {
                "unsupported-media-type"
            }
            ApiError::NotFound(_) => "not-found",
            ApiError::NotFinished(_) => "job-not-finished",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Unexpected(_) => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "Malformed request",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::TooLarge(_) => "Request too large",
            ApiError::Invalid(_) => "Invalid application",
            ApiError::InvalidBatch(_) => "Invalid batch",
            ApiError::NotReady => "Model not ready",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::ReloadFailed(_) => "Model reload failed",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::UnsupportedBatchType | ApiError::UnsupportedTrainingType => {
                "Unsupported media type"
            }
            ApiError::NotFound(_) => "Not found",
            ApiError::NotFinished(_) => "Job not finished",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Unexpected(_) => "Internal error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::InvalidBatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ReloadFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedBatchType | ApiError::UnsupportedTrainingType => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotFinished(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let detail = match self {
            ApiError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("https://loan-scoring.dev/problems/{}", self.slug()),
            "title": self.title(),
            "status": self.status_code().as_u16(),
            "detail": detail,
        });
        if let ApiError::Invalid(errors) = self {
            body["errors"] = json!(errors);
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
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
