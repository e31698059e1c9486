//! `GET /openapi.json`, generated here from the routes and the serving model's feature spec
//! (the application schema lists the real fields, kinds, ranges and categories), and `GET /docs`,
//! a small page shipped in the binary that renders it without fetching anything from the network.

use actix_web::{web, HttpResponse};
use features::FeatureKind;
use serde_json::{json, Value};

use crate::startup::AppState;

fn application_schema(state: &AppState) -> Value {
    let Some(m) = state.models.current() else {
        return json!({"type": "object", "description": "Feature values; the fields are listed once a model is loaded.", "additionalProperties": true});
    };
    let spec = &m.scorer.bundle().spec;
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for f in &spec.features {
        let mut p = match f.kind {
            FeatureKind::Numeric => {
                let mut p = json!({"type": "number"});
                if let Some(lo) = f.min {
                    p["minimum"] = json!(lo);
                }
                if let Some(hi) = f.max {
                    p["maximum"] = json!(hi);
                }
                p
            }
            FeatureKind::Categorical => {
                let mut p = json!({"type": "string"});
                if let Some(c) = &f.categories {
                    p["enum"] = json!(c);
                }
                p
            }
            FeatureKind::Boolean => json!({"type": "boolean"}),
        };
        let mut desc = f.description.clone().unwrap_or_else(|| f.reason.clone());
        if f.protected {
            desc.push_str(" (protected attribute: not used for scoring)");
        }
        p["description"] = json!(desc);
        if f.required && f.is_model_input() {
            required.push(f.name.clone());
        } else {
            p["nullable"] = json!(true);
        }
        props.insert(f.name.clone(), p);
    }
    if let Some(id) = &spec.id_column {
        props.insert(id.clone(), json!({"type": "string", "description": "Your id for the application (ignored for scoring)"}));
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

pub fn document(state: &AppState) -> Value {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let problem_resp = |d: &str| json!({"description": d, "content": {"application/problem+json": {"schema": problem.clone()}}});
    let errors = json!({
        "400": problem_resp("Malformed JSON"),
        "401": problem_resp("Missing or invalid API key"),
        "413": problem_resp("Body too large"),
        "415": problem_resp("Not application/json"),
        "422": problem_resp("Invalid application: every field error is listed"),
        "503": problem_resp("No model loaded yet"),
    });
    let explain = json!({"name": "explain", "in": "query", "required": false, "schema": {"type": "boolean", "default": true}, "description": "false skips reason codes"});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Loan-default scoring API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Probability of default, decision and reason codes for loan applications."},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}, "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Application": application_schema(state),
                "Reason": {"type": "object", "properties": {
                    "feature": {"type": "string"}, "value": {}, "contribution": {"type": "number", "description": "log-odds added to the risk"},
                    "text": {"type": "string"}}},
                "Prediction": {"type": "object", "required": ["default_probability", "decision", "reasons", "model", "request_id"], "properties": {
                    "default_probability": {"type": "number", "minimum": 0, "maximum": 1},
                    "decision": {"type": "string", "enum": ["approve", "review", "decline"]},
                    "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
                    "model": {"$ref": "#/components/schemas/ModelRef"},
                    "request_id": {"type": "string"}}},
                "ModelRef": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
                "FieldError": {"type": "object", "properties": {"field": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
            }
        },
        "security": [{}, {"apiKey": []}, {"bearer": []}],
        "paths": {
            "/v1/predict": {"post": {
                "summary": "Score one application", "parameters": [explain],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Application"}}}},
                "responses": merge(json!({"200": {"description": "Scored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}}}}), &errors)}},
            "/v1/predict/batch": {"post": {
                "summary": "Score up to the configured number of applications at once", "parameters": [explain],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["applications"],
                    "properties": {"applications": {"type": "array", "items": {"$ref": "#/components/schemas/Application"}}}}}}},
                "responses": merge(json!({"200": {"description": "Each application scored, or its errors by index",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}), &errors)}},
            "/v1/model": {"get": {"summary": "The serving model: name, version, spec, metrics, thresholds",
                "responses": {"200": {"description": "Serving model", "content": {"application/json": {"schema": {"type": "object"}}}}, "503": problem_resp("No model loaded yet")}}},
            "/v1/model/reload": {"post": {"summary": "Check the registry for a new version now",
                "responses": {"200": {"description": "Checked", "content": {"application/json": {"schema": {"type": "object"}}}}, "502": problem_resp("The new version failed to load; the old one keeps serving")}}},
            "/healthz": {"get": {"summary": "Alive", "security": [], "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {"get": {"summary": "Ready once a model is loaded", "security": [], "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}}, "503": problem_resp("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        }
    })
}

fn merge(mut a: Value, b: &Value) -> Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&state))
}

const DOCS: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loan-default scoring API</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
code,pre{background:#f4f4f4;padding:.1rem .3rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}</style></head>
<body><h1>Loan-default scoring API</h1>
<p>The machine-readable description is at <a href="/openapi.json">/openapi.json</a>.</p>
<div id="paths"></div><h2>Application fields</h2><div id="fields">Loading…</div>
<noscript>Enable JavaScript to render the description here, or read /openapi.json directly.</noscript>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
  let h = '<h2>Endpoints</h2><ul>';
  for (const [p, ops] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(ops))
    h += `<li><code>${m.toUpperCase()} ${esc(p)}</code>: ${esc(op.summary || '')}</li>`;
  document.getElementById('paths').innerHTML = h + '</ul>';
  const app = doc.components.schemas.Application, req = new Set(app.required || []);
  let t = '<table><tr><th>field</th><th>type</th><th>required</th><th>allowed</th><th>description</th></tr>';
  for (const [k, v] of Object.entries(app.properties || {}))
    t += `<tr><td><code>${esc(k)}</code></td><td>${esc(v.type)}</td><td>${req.has(k) ? 'yes' : 'no'}</td><td>${esc(v.enum ? v.enum.join(' | ') : [v.minimum, v.maximum].filter(x => x !== undefined).join(' to '))}</td><td>${esc(v.description || '')}</td></tr>`;
  document.getElementById('fields').innerHTML = t + '</table>';
});
</script></body></html>"#;

pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS)
}
