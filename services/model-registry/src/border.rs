//! Requests refused at the border (web_guard): answered in MLflow's error body, or as a page for
//! the web UI.

use actix_web::HttpResponse;

use crate::error::RegistryError;

/// A request refused at the border (wrong Host, cross-site write, not JSON), in MLflow's body
/// (a page for the web UI).
pub fn rejected(req: &actix_web::HttpRequest, r: &web_guard::Rejection) -> HttpResponse {
    if crate::ui::is_ui_path(req.path()) {
        let message = match r {
            web_guard::Rejection::CrossSite(_) => {
                "This form has expired or came from another site. Reload the page and try again."
                    .to_string()
            }
            other => other.message(),
        };
        return crate::ui::error_page(req, RegistryError::PermissionDenied(message));
    }
    let code = match r {
        web_guard::Rejection::NotJson(_) => "BAD_REQUEST",
        _ => "PERMISSION_DENIED",
    };
    HttpResponse::build(r.status())
        .json(serde_json::json!({"error_code": code, "message": r.message()}))
}
