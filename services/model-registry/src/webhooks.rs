//! MLflow 3's webhooks (`/api/2.0/mlflow/webhooks`): registry events POSTed to subscribers as
//! MLflow sends them: `{"entity", "action", "timestamp", "data"}`, with `X-MLflow-Delivery-Id`,
//! `X-MLflow-Timestamp` and, when the webhook has a secret, `X-MLflow-Signature:
//! v1,<base64 HMAC-SHA256 of "{delivery_id}.{timestamp}.{payload}">`. Deliveries run in the
//! background and are retried on 429, 5xx and connection errors (three tries).
//!
//! Events sent: `registered_model.created`, `model_version.created`,
//! `model_version_alias.created` and `model_version_alias.deleted`.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sqlx::Row;

use crate::error::{invalid, RegistryError, Result};
use crate::params::Params;
use crate::startup::AppState;
use crate::store::{now_ms, Pool};

/// What the handlers return (the route table imports this module, so not `routes::Resp`).
type Resp = Result<HttpResponse>;

fn ok(v: Value) -> Resp {
    Ok(HttpResponse::Ok().json(v))
}

/// (entity, action) pairs a webhook may subscribe to: the registry events this server sends,
/// named as MLflow names them.
const EVENTS: [(&str, &str); 4] = [
    ("registered_model", "created"),
    ("model_version", "created"),
    ("model_version_alias", "created"),
    ("model_version_alias", "deleted"),
];

/// A stored webhook (the secret is never answered).
struct Webhook {
    id: String,
    name: String,
    description: String,
    url: String,
    events: Vec<(String, String)>,
    secret: Option<String>,
    status: String,
    created: i64,
    updated: i64,
}

impl Webhook {
    fn json(&self) -> Value {
        json!({
            "webhook_id": self.id,
            "name": self.name,
            "description": self.description,
            "url": self.url,
            "events": self.events.iter().map(|(e, a)| json!({
                "entity": e.to_ascii_uppercase(),
                "action": a.to_ascii_uppercase(),
            })).collect::<Vec<_>>(),
            "status": self.status,
            "creation_timestamp": self.created,
            "last_updated_timestamp": self.updated,
        })
    }

    fn from_row(r: &sqlx::any::AnyRow) -> Result<Webhook> {
        let events: Vec<(String, String)> =
            serde_json::from_str::<Vec<Value>>(&r.try_get::<String, _>("events")?)
                .map_err(|e| RegistryError::Unexpected(e.into()))?
                .iter()
                .map(|e| {
                    (
                        e["entity"].as_str().unwrap_or_default().to_string(),
                        e["action"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
        Ok(Webhook {
            id: r.try_get("webhook_id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            url: r.try_get("url")?,
            events,
            secret: r.try_get("secret")?,
            status: r.try_get("status")?,
            created: r.try_get("creation_timestamp")?,
            updated: r.try_get("last_updated_timestamp")?,
        })
    }

    fn listens_to(&self, entity: &str, action: &str) -> bool {
        self.events.iter().any(|(e, a)| e == entity && a == action)
    }
}

fn not_found(id: &str) -> RegistryError {
    RegistryError::NotFound(format!("Webhook with ID {id} not found"))
}

/// `https://…` or `http://…`, as MLflow checks it.
fn check_url(url: &str) -> Result<String> {
    let url = url.trim();
    if url.is_empty() {
        return invalid("Webhook URL cannot be empty or just whitespace");
    }
    let parsed = url::Url::parse(url).or_else(|e| invalid(format!("Invalid webhook URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return invalid(format!(
            "Invalid webhook URL scheme: '{}'. Only http and https are supported.",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return invalid("Invalid webhook URL: no host");
    }
    Ok(url.to_string())
}

/// `[{"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"}]` (proto names or MLflow's values).
fn parse_events(p: &Params) -> Result<Option<Vec<(String, String)>>> {
    if p.get("events").is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for e in p.objects("events")? {
        let entity = e.str("entity")?.to_ascii_lowercase();
        let action = e.str("action")?.to_ascii_lowercase();
        if !EVENTS.contains(&(entity.as_str(), action.as_str())) {
            return invalid(format!(
                "Invalid webhook event: entity '{entity}' with action '{action}' is not supported"
            ));
        }
        if !out.contains(&(entity.clone(), action.clone())) {
            out.push((entity, action));
        }
    }
    if out.is_empty() {
        return invalid("Webhook events cannot be empty");
    }
    Ok(Some(out))
}

fn parse_status(p: &Params) -> Result<Option<String>> {
    match p.opt_str("status")?.map(|s| s.to_ascii_uppercase()) {
        None => Ok(None),
        Some(s) if s == "ACTIVE" || s == "DISABLED" => Ok(Some(s)),
        Some(s) => invalid(format!("Invalid webhook status '{s}'")),
    }
}

fn events_json(events: &[(String, String)]) -> String {
    Value::from(
        events
            .iter()
            .map(|(e, a)| json!({"entity": e, "action": a}))
            .collect::<Vec<_>>(),
    )
    .to_string()
}

async fn load(pool: &Pool, id: &str) -> Result<Webhook> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE webhook_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| not_found(id))?;
    Webhook::from_row(&row)
}

pub async fn create(p: Params, s: web::Data<AppState>) -> Resp {
    let name = p.str("name")?;
    if name.trim().is_empty() {
        return invalid("Webhook name cannot be empty");
    }
    let url = check_url(&p.str("url")?)?;
    let Some(events) = parse_events(&p)? else {
        return invalid("Missing value for required parameter 'events'");
    };
    let now = now_ms();
    let w = Webhook {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name,
        description: p.opt_str("description")?.unwrap_or_default(),
        url,
        events,
        secret: p.opt_str("secret")?.filter(|s| !s.is_empty()),
        status: parse_status(&p)?.unwrap_or_else(|| "ACTIVE".into()),
        created: now,
        updated: now,
    };
    sqlx::query(
        "INSERT INTO webhooks (webhook_id, name, description, url, events, secret, status, \
         creation_timestamp, last_updated_timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&w.id)
    .bind(&w.name)
    .bind(&w.description)
    .bind(&w.url)
    .bind(events_json(&w.events))
    .bind(&w.secret)
    .bind(&w.status)
    .bind(w.created)
    .bind(w.updated)
    .execute(&s.pool)
    .await?;
    ok(json!({"webhook": w.json()}))
}

pub async fn get(path: web::Path<String>, s: web::Data<AppState>) -> Resp {
    ok(json!({"webhook": load(&s.pool, &path).await?.json()}))
}

pub async fn list(p: Params, s: web::Data<AppState>) -> Resp {
    let max = p.opt_i64("max_results")?.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return invalid("max_results must be between 1 and 1000");
    }
    let offset = match p.opt_str("page_token")?.filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map_or_else(|| invalid("Invalid page_token"), Ok)?,
        None => 0,
    };
    let rows = sqlx::query(
        "SELECT * FROM webhooks ORDER BY creation_timestamp, webhook_id LIMIT $1 OFFSET $2",
    )
    .bind(max + 1)
    .bind(offset)
    .fetch_all(&s.pool)
    .await?;
    let mut hooks = rows
        .iter()
        .map(Webhook::from_row)
        .collect::<Result<Vec<_>>>()?;
    let more = hooks.len() as i64 > max;
    hooks.truncate(max as usize);
    let mut out = json!({"webhooks": hooks.iter().map(Webhook::json).collect::<Vec<_>>()});
    if more {
        out["next_page_token"] = json!((offset + max).to_string());
    }
    ok(out)
}

pub async fn update(path: web::Path<String>, p: Params, s: web::Data<AppState>) -> Resp {
    let mut w = load(&s.pool, &path).await?;
    if let Some(name) = p.opt_str("name")? {
        if name.trim().is_empty() {
            return invalid("Webhook name cannot be empty");
        }
        w.name = name;
    }
    if let Some(d) = p.opt_str("description")? {
        w.description = d;
    }
    if let Some(url) = p.opt_str("url")? {
        w.url = check_url(&url)?;
    }
    if let Some(events) = parse_events(&p)? {
        w.events = events;
    }
    if let Some(secret) = p.opt_str("secret")? {
        w.secret = Some(secret).filter(|s| !s.is_empty());
    }
    if let Some(status) = parse_status(&p)? {
        w.status = status;
    }
    w.updated = now_ms().max(w.updated + 1);
    sqlx::query(
        "UPDATE webhooks SET name = $1, description = $2, url = $3, events = $4, secret = $5, \
         status = $6, last_updated_timestamp = $7 WHERE webhook_id = $8",
    )
    .bind(&w.name)
    .bind(&w.description)
    .bind(&w.url)
    .bind(events_json(&w.events))
    .bind(&w.secret)
    .bind(&w.status)
    .bind(w.updated)
    .bind(&w.id)
    .execute(&s.pool)
    .await?;
    ok(json!({"webhook": w.json()}))
}

pub async fn delete(path: web::Path<String>, s: web::Data<AppState>) -> Resp {
    let n = sqlx::query("DELETE FROM webhooks WHERE webhook_id = $1")
        .bind(path.as_str())
        .execute(&s.pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(not_found(&path));
    }
    ok(json!({}))
}

/// Sends one example event (the one asked for, else the webhook's first) and says what came back.
pub async fn test(path: web::Path<String>, p: Params, s: web::Data<AppState>) -> Resp {
    let w = load(&s.pool, &path).await?;
    let (entity, action) = match p.get("event") {
        Some(Value::Object(e)) => {
            let e = Params::from_map(e.clone());
            (
                e.str("entity")?.to_ascii_lowercase(),
                e.str("action")?.to_ascii_lowercase(),
            )
        }
        _ => w.events.first().cloned().unwrap_or_default(),
    };
    let data = example(&entity, &action);
    let result = match send_once(&w, &entity, &action, &data).await {
        Ok((status, body)) => json!({
            "success": (200..300).contains(&status),
            "response_status": status,
            "response_body": body,
        }),
        Err(e) => json!({"success": false, "error_message": e.to_string()}),
    };
    Ok(HttpResponse::Ok().json(json!({"result": result})))
}

fn example(entity: &str, action: &str) -> Value {
    match (entity, action) {
        ("model_version_alias", "deleted") => {
            json!({"name": "example_model", "alias": "example_alias"})
        }
        ("model_version_alias", _) => {
            json!({"name": "example_model", "alias": "example_alias", "version": "1"})
        }
        ("model_version", _) => {
            json!({"name": "example_model", "version": "1", "source": "models:/123", "run_id": "abcd1234abcd5678", "tags": {}, "description": null})
        }
        _ => json!({"name": "example_model", "tags": {}, "description": null}),
    }
}

fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client")
    })
}

/// `v1,<base64 HMAC-SHA256 of "{delivery_id}.{timestamp}.{payload}">`, as MLflow signs.
pub fn signature(secret: &str, delivery_id: &str, timestamp: &str, payload: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(format!("{delivery_id}.{timestamp}.{payload}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// One POST of an event; (status, body) or the transport error.
async fn send_once(
    w: &Webhook,
    entity: &str,
    action: &str,
    data: &Value,
) -> reqwest::Result<(u16, String)> {
    let payload = json!({
        "entity": entity,
        "action": action,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        "data": data,
    })
    .to_string();
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let timestamp = (now_ms() / 1000).to_string();
    let mut req = client()
        .post(&w.url)
        .header("content-type", "application/json")
        .header("X-MLflow-Delivery-Id", &delivery_id)
        .header("X-MLflow-Timestamp", &timestamp);
    if let Some(secret) = &w.secret {
        req = req.header(
            "X-MLflow-Signature",
            signature(secret, &delivery_id, &timestamp, &payload),
        );
    }
    let resp = req.body(payload).send().await?;
    let status = resp.status().as_u16();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(1000)
        .collect();
    Ok((status, body))
}

/// Sends `entity.action` with `data` to every active webhook that listens to it, in the
/// background; retried on 429, 5xx and connection errors.
pub fn fire(pool: &Pool, entity: &'static str, action: &'static str, data: Value) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let rows = match sqlx::query("SELECT * FROM webhooks WHERE status = 'ACTIVE'")
            .fetch_all(&pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhooks");
                return;
            }
        };
        for w in rows.iter().filter_map(|r| Webhook::from_row(r).ok()) {
            if !w.listens_to(entity, action) {
                continue;
            }
            let data = data.clone();
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(500);
                for attempt in 1..=3 {
                    match send_once(&w, entity, action, &data).await {
                        Ok((status, _)) if status != 429 && status < 500 => {
                            tracing::debug!(webhook = %w.id, status, "webhook delivered");
                            return;
                        }
                        Ok((status, _)) => {
                            tracing::warn!(webhook = %w.id, status, attempt, "webhook delivery refused")
                        }
                        Err(e) => {
                            tracing::warn!(webhook = %w.id, error = %e, attempt, "webhook delivery failed")
                        }
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            });
        }
    });
}
