//! `GET /openapi.json`, generated here from the routes and the serving model's feature spec
//! (the application schema lists the real fields, kinds, ranges and categories), and `GET /docs`,
//! a small page shipped in the binary that renders it without fetching anything from the network.

use actix_web::{web, HttpResponse};
use features::FeatureKind;
use serde_json::{json, Value};

use crate::state::AppState;

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

/// A batch job as the status, submit and cancel calls return it (`JobRecord` plus `links`).
fn batch_job_schema() -> Value {
    let count = |d: &str| json!({"type": "integer", "minimum": 0, "description": d});
    let time = |d: &str| json!({"type": "string", "format": "date-time", "description": d});
    let model = json!({"type": "object", "required": ["name", "version"], "description": "The model version the job is pinned to when accepted",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
            "local_uri": {"type": "string", "description": "The local bundle directory, when the API serves one (MODEL_URI)"}}});
    let links = json!({"type": "object", "required": ["self", "results", "errors"], "properties": {
        "self": {"type": "string"}, "results": {"type": "string"}, "errors": {"type": "string"}}});
    json!({"type": "object", "required": ["id", "state", "format", "rows_total", "rows_scored", "rows_rejected",
            "chunks_total", "chunks_done", "model", "reasons", "created_at", "updated_at", "links"],
        "properties": {
            "id": {"type": "string", "description": "Sortable by creation time"},
            "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "format": {"type": "string", "enum": ["csv", "ndjson"], "description": "Format of the uploaded file"},
            "rows_total": count("Rows in the file"),
            "rows_scored": count("Rows scored so far"),
            "rows_rejected": count("Rows that failed validation so far (listed by the errors call)"),
            "chunks_total": count("Chunks the file was split into"),
            "chunks_done": count("Chunks finished"),
            "model": model,
            "reasons": {"type": "string", "enum": ["all", "adverse", "none"], "description": "Which rows get reason codes"},
            "created_at": time("When the job was accepted"),
            "updated_at": time("Last change"),
            "finished_at": time("When the job reached a final state; absent before"),
            "error": {"type": "string", "description": "Why the job failed or was cancelled; absent otherwise"},
            "links": links}})
}

/// `/v1/batch-jobs` and below. Parameters sit on each operation (not the path item), so the docs
/// page, which lists every key of a path item as an operation, stays right.
fn batch_job_paths(problem_resp: &dyn Fn(&str) -> Value) -> Value {
    let job = json!({"application/json": {"schema": {"$ref": "#/components/schemas/BatchJob"}}});
    let location =
        json!({"Location": {"description": "The job's URL", "schema": {"type": "string"}}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Job id"});
    let mut unavailable = problem_resp(
        "Batch jobs unavailable: Redis cannot be reached (single scoring still works)",
    );
    unavailable["headers"] =
        json!({"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}});
    let mut unavailable_or_no_model =
        problem_resp("Batch jobs unavailable (Redis cannot be reached), or no model loaded yet");
    unavailable_or_no_model["headers"] = unavailable["headers"].clone();
    let unauthorized = problem_resp("Missing or invalid API key");
    let not_found = problem_resp("No such job (or it has expired)");
    let reasons = json!({"name": "reasons", "in": "query", "required": false,
        "schema": {"type": "string", "enum": ["all", "adverse", "none"], "default": "all"},
        "description": "Which rows get reason codes: all, only review and decline rows (what adverse-action notices need), or none (fastest)"});
    let idempotency = json!({"name": "Idempotency-Key", "in": "header", "required": false,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
        "description": "Printable ASCII, no spaces; the same key with the same request returns the first job instead of creating another, with a different request it is a 422"});
    let file = json!({"type": "string", "format": "binary"});
    let create = json!({"post": {
        "summary": "Submit a file of applications to score in the background", "parameters": [reasons, idempotency],
        "requestBody": {"required": true, "description": "CSV with a header row, or one JSON object per line; the spec's required inputs must be present",
            "content": {"text/csv": {"schema": file.clone()}, "application/x-ndjson": {"schema": file}}},
        "responses": {
            "202": {"description": "Accepted and queued", "headers": location.clone(), "content": job.clone()},
            "200": {"description": "A job with this Idempotency-Key exists already: that job", "headers": location, "content": job.clone()},
            "400": problem_resp("Upload interrupted"),
            "401": unauthorized.clone(),
            "413": problem_resp("File larger than BATCH_MAX_BYTES"),
            "415": problem_resp("Not text/csv or application/x-ndjson"),
            "422": problem_resp("Invalid file (required columns missing, malformed CSV, a line that is not a JSON object, a record over 1 MiB, no rows), invalid reasons value or Idempotency-Key, or an Idempotency-Key already used for a different request"),
            "503": unavailable_or_no_model,
            "507": problem_resp("The job storage is full; nothing was kept")}}});
    let status = json!({
        "get": {"summary": "A batch job's state and progress", "parameters": [id.clone()], "responses": {
            "200": {"description": "The job", "content": job.clone()},
            "401": unauthorized.clone(), "404": not_found.clone(), "503": unavailable.clone()}},
        "delete": {"summary": "Cancel a batch job", "parameters": [id.clone()], "responses": {
            "200": {"description": "The job, cancelled (a job already finished is returned unchanged)", "content": job},
            "401": unauthorized.clone(), "404": not_found.clone(), "503": unavailable.clone()}}});
    let part = |summary: &str, csv: &str, ndjson: &str| {
        json!({"get": {"summary": summary, "parameters": [id.clone()], "responses": {
            "200": {"description": "CSV by default; NDJSON when Accept names application/x-ndjson", "content": {
                "text/csv": {"schema": {"type": "string", "description": csv}},
                "application/x-ndjson": {"schema": {"type": "string", "description": ndjson}}}},
            "401": unauthorized.clone(), "404": not_found.clone(),
            "409": problem_resp("The job has not succeeded (queued, running, failed or cancelled)"),
            "503": unavailable.clone()}}})
    };
    json!({
        "/v1/batch-jobs": create,
        "/v1/batch-jobs/{id}": status,
        "/v1/batch-jobs/{id}/results": part("A succeeded job's scored rows, in input order",
            "Your columns that are not model inputs (the label dropped), then default_probability, decision, reason_1..reason_N",
            "One object per row: the carried-through columns as strings, default_probability (number), decision, reasons (array)"),
        "/v1/batch-jobs/{id}/errors": part("A succeeded job's rejected rows, with the reason",
            "Columns row (1-based in the uploaded file, header not counted) and error",
            "One object per rejected row: {\"row\": n, \"error\": \"...\"}"),
    })
}

/// A training job as the submit, status and cancel calls return it (`job_json` in
/// `training_jobs.rs`). Every key is always there; the ones without a value are null.
fn training_job_schema() -> Value {
    let time = |d: &str| json!({"type": "string", "format": "date-time", "description": d});
    let settings = json!({"type": "object", "description": "The settings the job trains with (defaults filled in)",
        "required": ["register_as", "experiment", "trees", "max_depth", "learning_rate", "seed", "test_fraction", "smote"],
        "properties": {
            "register_as": {"type": "string", "description": "Registered model that gets the new version"},
            "experiment": {"type": "string", "description": "Experiment the training run is logged to"},
            "trees": {"type": "integer", "minimum": 1, "maximum": 5000},
            "max_depth": {"type": "integer", "minimum": 1, "maximum": 16},
            "learning_rate": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1},
            "seed": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
            "test_fraction": {"type": "number", "minimum": 0.05, "maximum": 0.5},
            "smote": {"type": "boolean"},
            "engine": {"type": "string", "enum": ["hist", "gbdt"],
                "description": "Tree learner (absent on jobs submitted before engines existed, which trained with gbdt)"}}});
    let registered = json!({"type": "object", "description": "The logged run and the registered version",
        "required": ["run_id", "model_name", "version", "experiment_id"],
        "properties": {"run_id": {"type": "string"}, "model_name": {"type": "string"},
            "version": {"type": "string"}, "experiment_id": {"type": "string"}}});
    let result = json!({"type": "object", "nullable": true, "description": "What the training produced; null until the job succeeds",
        "required": ["model_uuid", "metrics", "training_seconds"],
        "properties": {
            "model_uuid": {"type": "string"},
            "metrics": {"type": "object", "additionalProperties": {"type": "number"},
                "description": "Held-out metrics: test_roc_auc, test_pr_auc, test_ks, test_brier, test_log_loss, test_rows, train_rows"},
            "training_seconds": {"type": "number", "minimum": 0},
            "registered": registered}});
    let links =
        json!({"type": "object", "required": ["self"], "properties": {"self": {"type": "string"}}});
    json!({"type": "object", "required": ["id", "state", "settings", "result", "error", "created_at", "updated_at", "finished_at", "links"],
        "properties": {
            "id": {"type": "string", "description": "Sortable by creation time"},
            "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "settings": settings,
            "result": result,
            "error": {"type": "string", "nullable": true, "description": "Why the job failed or was cancelled; null otherwise"},
            "created_at": time("When the job was accepted"),
            "updated_at": time("Last change"),
            "finished_at": {"type": "string", "format": "date-time", "nullable": true,
                "description": "When the job reached a final state; null before"},
            "links": links}})
}

/// `/v1/training-jobs` and below, parameters on each operation like the batch-job paths.
fn training_job_paths(problem_resp: &dyn Fn(&str) -> Value) -> Value {
    let job = json!({"application/json": {"schema": {"$ref": "#/components/schemas/TrainingJob"}}});
    let location =
        json!({"Location": {"description": "The job's URL", "schema": {"type": "string"}}});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Job id"});
    let retry_after =
        json!({"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}});
    let mut unavailable = problem_resp("Training jobs unavailable: Redis cannot be reached");
    unavailable["headers"] = retry_after.clone();
    let mut unavailable_or_no_model = problem_resp(
        "Training jobs unavailable (Redis cannot be reached, or the job could not be queued), or no model loaded yet",
    );
    unavailable_or_no_model["headers"] = retry_after;
    let unauthorized = problem_resp("Missing or invalid API key");
    let not_found = problem_resp("No such training job (or it has expired)");
    let query = |name: &str, schema: Value, d: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": d});
    let parameters = json!([
        query("register_as", json!({"type": "string", "minLength": 1, "maxLength": 256}),
            "Registered model that gets the new version; defaults to the served model's name (MODEL_NAME). No alias moves"),
        query("experiment", json!({"type": "string", "minLength": 1, "maxLength": 256, "default": "loan-default"}),
            "Experiment the training run is logged to"),
        query("trees", json!({"type": "integer", "minimum": 1, "maximum": 5000, "default": 200}), "Boosting rounds"),
        query("max_depth", json!({"type": "integer", "minimum": 1, "maximum": 16, "default": 4}), "Maximum tree depth"),
        query("learning_rate", json!({"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "default": 0.05}),
            "Learning rate, in (0, 1]"),
        query("seed", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 42}), "Random seed (split, SMOTE, boosting)"),
        query("test_fraction", json!({"type": "number", "minimum": 0.05, "maximum": 0.5, "default": 0.2}),
            "Share of the rows held out for the metrics"),
        query("smote", json!({"type": "boolean", "default": true}), "Oversample the minority class with SMOTE"),
        query("engine", json!({"type": "string", "enum": ["hist", "gbdt"], "default": "hist"}),
            "Tree learner: hist (histogram boosting, XGBoost's objective, missing-value directions, monotone constraints) or gbdt (the gbdt crate)"),
    ]);
    let create = json!({"post": {
        "summary": "Train and register a new model version in the background (nothing is promoted)",
        "parameters": parameters,
        "requestBody": {"required": true,
            "description": "A labelled CSV upload (the label and the spec's required inputs as columns), or a CSV already in the shared storage named by path",
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object", "required": ["dataset_path"], "additionalProperties": false,
                    "properties": {"dataset_path": {"type": "string", "minLength": 1, "maxLength": 1024,
                        "description": "Relative to JOBS_ROOT, without '..'"}}}}}},
        "responses": {
            "202": {"description": "Accepted and queued", "headers": location, "content": job.clone()},
            "400": problem_resp("Malformed JSON body, upload interrupted, or an unknown or unparsable query parameter"),
            "401": unauthorized.clone(),
            "413": problem_resp("Upload larger than TRAIN_MAX_BYTES, or a JSON body over 4096 bytes"),
            "507": problem_resp("The job storage is full; nothing was kept"),
            "415": problem_resp("Not text/csv or application/json"),
            "422": problem_resp("Invalid settings, or an invalid dataset (not a CSV, required columns or the label missing, no rows, a dataset_path outside the shared storage, not found or larger than TRAIN_MAX_BYTES)"),
            "503": unavailable_or_no_model}}});
    let status = json!({
        "get": {"summary": "A training job's state, settings and result", "parameters": [id.clone()], "responses": {
            "200": {"description": "The job", "content": job.clone()},
            "401": unauthorized.clone(), "404": not_found.clone(), "503": unavailable.clone()}},
        "delete": {"summary": "Cancel a training job", "parameters": [id], "responses": {
            "200": {"description": "The job, cancelled (a job already finished is returned unchanged)", "content": job},
            "401": unauthorized, "404": not_found, "503": unavailable}}});
    json!({
        "/v1/training-jobs": create,
        "/v1/training-jobs/{id}": status,
    })
}

/// The answer to `POST /v1/predict/batch`: one entry per application, by index.
fn batch_scores_schema() -> Value {
    let scored = json!({"type": "object", "required": ["index", "default_probability", "decision", "reasons"], "properties": {
        "index": {"type": "integer", "minimum": 0},
        "default_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "decision": {"type": "string", "enum": ["approve", "review", "decline"]},
        "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}}}});
    let rejected = json!({"type": "object", "required": ["index", "errors"], "properties": {
        "index": {"type": "integer", "minimum": 0},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}});
    json!({"type": "object", "required": ["results", "scored", "rejected", "model", "request_id"], "properties": {
        "results": {"type": "array", "items": {"oneOf": [scored, rejected]}},
        "scored": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "model": {"$ref": "#/components/schemas/ModelRef"},
        "request_id": {"type": "string"}}})
}

/// The answer to `GET /v1/model`.
fn serving_model_schema() -> Value {
    let number = json!({"type": "number"});
    json!({"type": "object", "required": ["name", "version", "source", "loaded_at", "model_uuid", "model_source", "spec", "metrics", "thresholds", "trees"], "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "source": {"type": "string", "description": "A bundle directory or a models:/ URI"},
        "loaded_at": {"type": "string", "format": "date-time"},
        "model_uuid": {"type": "string"},
        "model_source": {"type": "string", "enum": ["hist", "gbdt", "xgboost"], "description": "Trained here (hist or gbdt engine), or imported from XGBoost"},
        "spec": {"type": "object", "description": "The feature spec (docs/feature-spec.md)"},
        "metrics": {"type": "object", "nullable": true, "description": "Held-out metrics from training; null for a bundle saved without them"},
        "thresholds": {"type": "object", "required": ["approve", "decline", "rule", "review_recall"], "properties": {
            "approve": number.clone(), "decline": number.clone(), "rule": {"type": "object"}, "review_recall": number}},
        "trees": {"type": "integer", "minimum": 0}}})
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
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "Loan-default scoring API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Probability of default, decision and reason codes for loan applications."},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}, "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Application": application_schema(state),
                "Reason": {"type": "object", "required": ["feature", "value", "contribution", "text"], "properties": {
                    "feature": {"type": "string"}, "value": {}, "contribution": {"type": "number", "description": "log-odds added to the risk"},
                    "text": {"type": "string"}}},
                "Prediction": {"type": "object", "required": ["default_probability", "decision", "reasons", "model", "request_id"], "properties": {
                    "default_probability": {"type": "number", "minimum": 0, "maximum": 1},
                    "decision": {"type": "string", "enum": ["approve", "review", "decline"]},
                    "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
                    "model": {"$ref": "#/components/schemas/ModelRef"},
                    "request_id": {"type": "string"}}},
                "BatchJob": batch_job_schema(),
                "TrainingJob": training_job_schema(),
                "ModelRef": {"type": "object", "required": ["name", "version"], "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
                "BatchScores": batch_scores_schema(),
                "ServingModel": serving_model_schema(),
                "Decisions": decisions_schema(),
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
                    "properties": {"applications": {"type": "array", "maxItems": state.settings.max_batch,
                        "description": "Applications shaped as the Application schema. Each one is validated on its own: one that is not an object, or has a missing, unknown or wrong-typed field, is reported by its index in `results` (200), and the others are still scored. Only the body's shape (not JSON, no `applications` list, more than the limit) is a 4xx.",
                        "items": {"description": "An application (see the Application schema); validated per row"}}}}}}},
                "responses": merge(json!({"200": {"description": "Each application scored, or its errors by index",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchScores"}}}}}), &errors)}},
            "/v1/model": {"get": {"summary": "The serving model: name, version, spec, metrics, thresholds",
                "responses": {"200": {"description": "Serving model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServingModel"}}}}, "503": problem_resp("No model loaded yet")}}},
            "/v1/model/reload": {"post": {"summary": "Check the registry for a new version now",
                "responses": {"200": {"description": "Checked", "content": {"application/json": {"schema": {"type": "object", "required": ["swapped", "model"], "properties": {
                    "swapped": {"type": "boolean", "description": "Whether a new version was loaded"}, "model": {"$ref": "#/components/schemas/ModelRef"}}}}}}, "503": problem_resp("No model loaded yet"), "502": problem_resp("The new version failed to load; the old one keeps serving")}}},
            "/healthz": {"get": {"summary": "Alive", "security": [], "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}}}},
            "/readyz": {"get": {"summary": "Ready once a model is loaded", "security": [], "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object", "required": ["status", "model"], "properties": {
                "status": {"type": "string", "enum": ["ready"]}, "model": {"$ref": "#/components/schemas/ModelRef"}}}}}}, "503": problem_resp("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        }
    });
    // Batch- and training-job paths are secured like scoring: by the document-level `security`.
    let paths = merge(doc["paths"].take(), &batch_job_paths(&problem_resp));
    let paths = merge(paths, &training_job_paths(&problem_resp));
    let paths = merge(paths, &decision_paths(&problem_resp));
    let paths = merge(
        paths,
        &json!({"/v1/monitoring/drift": {"get": {
            "summary": "Drift: population stability index (PSI) of the score and of every feature over the last DRIFT_WINDOW decisions against the training data (< 0.1 stable, 0.1 to 0.25 watch, > 0.25 act)",
            "responses": {
                "200": {"description": "Drift report", "content": {"application/json": {"schema": drift_schema()}}},
                "401": problem_resp("Missing or invalid API key"),
                "404": problem_resp("The serving model has no drift baseline, or DRIFT_WINDOW=0"),
                "503": problem_resp("No model loaded yet")}}}}),
    );
    let paths = merge(
        paths,
        &json!({"/v1/model/events": {"post": {
            "summary": "Alias moves pushed by the registry (MLflow 3 webhook deliveries, signed with MODEL_WEBHOOK_SECRET)",
            "security": [],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {"description": "Accepted; which pollers were woken", "content": {"application/json": {"schema": {"type": "object", "required": ["woken"], "properties": {"woken": {"type": "array", "items": {"type": "string"}}}}}}},
                "400": problem_resp("Not JSON"),
                "403": problem_resp("Missing, stale or wrong signature"),
                "404": problem_resp("This API does not subscribe to model events")}}}}),
    );
    doc["paths"] = paths;
    doc
}

/// The audit log's records of a request.
fn decisions_schema() -> Value {
    json!({"type": "object", "required": ["request_id", "records"], "properties": {
                    "request_id": {"type": "string"},
                    "records": {"type": "array", "items": {"type": "object", "required": ["decision_id", "request_id", "row_index", "recorded_at_ms", "source", "model", "features", "probability", "decision", "thresholds", "reason_policy", "reasons"], "properties": {
                        "decision_id": {"type": "string"}, "request_id": {"type": "string"}, "row_index": {"type": "integer"},
                        "recorded_at_ms": {"type": "integer"}, "source": {"type": "string", "enum": ["predict", "predict_batch", "job"]},
                        "key_id": {"type": "string", "nullable": true},
                        "model": {"type": "object", "required": ["name", "version", "bundle_sha256"], "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "bundle_sha256": {"type": "string"}}},
                        "features": {"type": "object", "description": "The applicant's values as scored"},
                        "probability": {"type": "number"}, "decision": {"type": "string", "enum": ["approve", "review", "decline"]},
                        "thresholds": {"type": "object"}, "reason_policy": {"type": "string", "enum": ["all", "adverse", "none"]},
                        "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
                        "shadow": {"type": "object", "nullable": true}}}}}})
}

/// `GET /v1/monitoring/drift`'s answer.
fn drift_schema() -> Value {
    let part = json!({"type": "object", "required": ["psi", "level", "bins"], "properties": {
        "psi": {"type": "number"}, "level": {"type": "string", "enum": ["stable", "watch", "act"]},
        "bins": {"type": "array", "items": {"type": "object", "required": ["bin", "expected", "actual", "count"], "properties": {
            "bin": {"type": "string"}, "expected": {"type": "number"}, "actual": {"type": "number"}, "count": {"type": "integer"}}}}}});
    json!({"type": "object", "required": ["window", "capacity", "model", "score", "features"], "properties": {
        "window": {"type": "integer", "description": "Decisions counted"},
        "capacity": {"type": "integer", "description": "DRIFT_WINDOW"},
        "model": {"type": "object", "required": ["name", "version"], "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
        "score": part,
        "features": {"type": "object", "additionalProperties": part}}})
}

/// `GET` and `DELETE /v1/decisions/{request_id}`.
fn decision_paths(problem_resp: &dyn Fn(&str) -> Value) -> Value {
    json!({
    "/v1/decisions/{request_id}": {
                "parameters": [{"name": "request_id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The request id a scoring answer carried (`request_id`, `X-Request-Id`), or a batch job's id"}],
                "get": {"summary": "The recorded decisions of a request (the audit log; a key sees its own, an admin key all)",
                    "responses": {"200": {"description": "Recorded decisions", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decisions"}}}},
                        "401": problem_resp("Missing or invalid API key"), "404": problem_resp("No such request, another key's, or no audit log"), "503": problem_resp("The audit store is unreachable")}},
                "delete": {"summary": "Erase the recorded decisions of a request (admin; an applicant's request for erasure)",
                    "responses": {"200": {"description": "Erased", "content": {"application/json": {"schema": {"type": "object", "required": ["request_id", "erased"], "properties": {"request_id": {"type": "string"}, "erased": {"type": "integer"}}}}}},
                        "401": problem_resp("Missing or invalid API key"), "403": problem_resp("Not an admin key"), "404": problem_resp("No such request, or no audit log"), "503": problem_resp("The audit store is unreachable")}}}
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
