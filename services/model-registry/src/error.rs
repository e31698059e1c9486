//! The service's errors, mapped once to MLflow's error body and status codes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A failure `mlflow server` reports as a 500 with its own message (kept for clients and
    /// MLflow's test suites that check both).
    #[error("{0}")]
    Internal(String),
    #[error("endpoint not found")]
    EndpointNotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

impl RegistryError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            RegistryError::AlreadyExists(_) => "RESOURCE_ALREADY_EXISTS",
            RegistryError::InvalidParameter(_) => "INVALID_PARAMETER_VALUE",
            RegistryError::BadRequest(_) => "BAD_REQUEST",
            RegistryError::Unauthenticated(_) => "UNAUTHENTICATED",
            RegistryError::PermissionDenied(_) => "PERMISSION_DENIED",
            RegistryError::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            RegistryError::Internal(_) | RegistryError::Unexpected(_) => "INTERNAL_ERROR",
        }
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::Unexpected(anyhow::Error::new(e).context("database error"))
    }
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        match self {
            RegistryError::NotFound(_) | RegistryError::EndpointNotFound => StatusCode::NOT_FOUND,
            RegistryError::AlreadyExists(_)
            | RegistryError::InvalidParameter(_)
            | RegistryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RegistryError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            RegistryError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            RegistryError::Internal(_) | RegistryError::Unexpected(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            RegistryError::Unexpected(e) => {
                // Logged once here with the whole cause chain; the client gets a plain message.
                tracing::error!(error = format!("{e:#}"), "request failed");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, RegistryError::Unauthenticated(_)) {
            resp.insert_header(("WWW-Authenticate", "Basic realm=\"mlflow\""));
        }
        resp.json(serde_json::json!({"error_code": self.code(), "message": message}))
    }
}

/// Shorthand for a 400 INVALID_PARAMETER_VALUE.
pub fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(RegistryError::InvalidParameter(message.into()))
}
