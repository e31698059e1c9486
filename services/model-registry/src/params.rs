//! Request parameters the way MLflow's client sends them: a JSON body for POST, PATCH and
//! DELETE, a query string for GET (and either for some endpoints). Both land in one map with
//! typed, validating getters; handlers take them as extractors ([`Params`], [`QueryParams`]).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};

use crate::error::{invalid, Result};

/// MLflow's limits on keys and values (`utils/validation.py`).
pub const MAX_KEY: usize = 250;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_RUN_TAG_VALUE: usize = 8000;
pub const MAX_EXPERIMENT_TAG_VALUE: usize = 20_000;
pub const MAX_REGISTRY_TAG_VALUE: usize = 100_000;
pub const MAX_NAME: usize = 500;

#[derive(Debug, Default)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Merges the query string and, when present, the JSON body.
    pub fn parse(req: &HttpRequest, body: &[u8]) -> Result<Params> {
        let mut map = Map::new();
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            let v = Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(Value::Array(a)) => a.push(v),
                Some(prev) => {
                    let first = prev.take();
                    *prev = Value::Array(vec![first, v]);
                }
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => map.extend(o),
                Ok(_) => return invalid("the request body must be a JSON object"),
                Err(e) => {
                    return Err(crate::error::RegistryError::BadRequest(format!(
                        "malformed JSON body: {e}"
                    )))
                }
            }
        }
        if map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            // PostgreSQL cannot store U+0000 in text; refuse it on every backend alike.
            return invalid("parameters may not contain the NUL character (U+0000)");
        }
        Ok(Params(map))
    }

    pub fn from_map(map: Map<String, Value>) -> Params {
        Params(map)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// An optional string. As in MLflow, a JSON number or boolean where a string belongs is
    /// refused (query-string values are always strings).
    pub fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) if a.len() == 1 => {
                Params::from_map(Map::from_iter([(key.to_string(), a[0].clone())])).opt_str(key)
            }
            Some(other) => bad_value(key, other),
        }
    }

    /// A required, non-empty string.
    pub fn str(&self, key: &str) -> Result<String> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => invalid(format!("Missing value for required parameter '{key}'.")),
        }
    }

    /// Either of two names (MLflow sends `run_id` and the older `run_uuid`).
    pub fn str_either(&self, a: &str, b: &str) -> Result<String> {
        match (self.opt_str(a)?, self.opt_str(b)?) {
            (Some(x), _) if !x.is_empty() => Ok(x),
            (_, Some(y)) if !y.is_empty() => Ok(y),
            _ => invalid(format!("Missing value for required parameter '{a}'.")),
        }
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => match n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            {
                Some(i) => Ok(Some(i)),
                None => bad_value(key, v),
            },
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v @ Value::String(s)) => match s.trim().parse() {
                Ok(i) => Ok(Some(i)),
                Err(_) => bad_value(key, v),
            },
            Some(other) => bad_value(key, other),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v @ Value::String(s)) => match parse_float(s) {
                Some(f) => Ok(Some(f)),
                None => bad_value(key, v),
            },
            Some(other) => bad_value(key, other),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => invalid(format!(
                    "Invalid value '{s}' for parameter '{key}': expected true or false"
                )),
            },
            Some(_) => invalid(format!(
                "Invalid value for parameter '{key}': expected a boolean"
            )),
        }
    }

    /// A list of strings (a JSON array, or repeated query parameters).
    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => invalid(format!(
                        "Invalid value for parameter '{key}': expected a list of strings"
                    )),
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Number(n)) => Ok(vec![n.to_string()]),
            Some(_) => invalid(format!(
                "Invalid value for parameter '{key}': expected a list"
            )),
        }
    }

    /// `[{key, value}]` lists (tags, params).
    pub fn key_values(&self, key: &str, max_value: usize) -> Result<Vec<(String, String)>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = v else {
            return bad_value(key, v);
        };
        items
            .iter()
            .map(|item| {
                let p = Params::from_map(item.as_object().cloned().unwrap_or_default());
                let k = p.str("key")?;
                let v = p.opt_str("value")?.unwrap_or_default();
                check_key(&k)?;
                check_value(&k, &v, max_value)?;
                Ok((k, v))
            })
            .collect()
    }

    /// Raw list of objects.
    pub fn objects(&self, key: &str) -> Result<Vec<Params>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Object(o) => Ok(Params::from_map(o.clone())),
                    _ => invalid(format!(
                        "Invalid value for parameter '{key}': expected a list of objects"
                    )),
                })
                .collect(),
            Some(other) => bad_value(key, other),
        }
    }
}

/// The query string merged with the JSON body, for handlers that take `p: Params`. The body is
/// read by actix's own `web::Bytes` extractor, so the app's `PayloadConfig` limit applies and an
/// oversized or broken body is refused exactly as that extractor refuses it.
impl FromRequest for Params {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, std::result::Result<Params, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = actix_web::web::Bytes::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move { Ok(Params::parse(&req, &body.await?)?) })
    }
}

/// The query string alone, for handlers that leave the body unread (GET downloads, listings)
/// or stream it themselves (uploads).
#[derive(Debug, Default)]
pub struct QueryParams(pub Params);

impl std::ops::Deref for QueryParams {
    type Target = Params;

    fn deref(&self) -> &Params {
        &self.0
    }
}

impl FromRequest for QueryParams {
    type Error = actix_web::Error;
    type Future = std::future::Ready<std::result::Result<QueryParams, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            Params::parse(req, &[])
                .map(QueryParams)
                .map_err(actix_web::Error::from),
        )
    }
}

/// MLflow's answer to a value of the wrong type: `Invalid value 31 for parameter 'run_id'
/// supplied` (the value as JSON).
pub fn bad_value<T>(key: &str, value: &Value) -> Result<T> {
    let mut shown = value.to_string();
    if shown.len() > 200 {
        shown = format!("{}…", shown.chars().take(200).collect::<String>());
    }
    invalid(format!(
        "Invalid value {shown} for parameter '{key}' supplied"
    ))
}

/// MLflow accepts "NaN", "Infinity" and friends for metric values.
pub fn parse_float(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "Inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" | "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

pub fn check_key(k: &str) -> Result<()> {
    if k.is_empty() || k.len() > MAX_KEY {
        return invalid(format!(
            "Invalid key: keys must be 1 to {MAX_KEY} characters"
        ));
    }
    // MLflow's rule: alphanumerics, underscores, dashes, periods, spaces, slashes; no '..' path.
    if !k
        .chars()
        .all(|c| c.is_alphanumeric() || "_-. /:".contains(c))
        || k.split('/').any(|p| p == "..")
        || k.starts_with('/')
    {
        return invalid(format!(
            "Invalid key '{k}': names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)"
        ));
    }
    Ok(())
}

pub fn check_value(k: &str, v: &str, max: usize) -> Result<()> {
    if v.len() > max {
        return invalid(format!(
            "Value for '{k}' is {} characters, more than the limit of {max}",
            v.len()
        ));
    }
    Ok(())
}

/// Whether a JSON value holds U+0000 in any string or key.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Refuses a request whose path or query string holds an encoded NUL (`%00`) with 400:
/// PostgreSQL cannot store U+0000 in text, and no name, id or path of this server contains one.
/// (JSON bodies are checked in [`Params::parse`].)
pub async fn refuse_nul(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> std::result::Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error>
{
    let raw = req.uri().path_and_query().map_or("", |p| p.as_str());
    if raw.contains("%00") {
        let resp = actix_web::ResponseError::error_response(
            &crate::error::RegistryError::InvalidParameter(
                "the path and query may not contain the NUL character (%00)".into(),
            ),
        );
        return Ok(req.into_response(resp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
