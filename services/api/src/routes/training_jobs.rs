//! `POST /v1/training-jobs`, `GET /v1/training-jobs/{id}`, `DELETE /v1/training-jobs/{id}`:
//! retraining as a background job. The dataset is uploaded (CSV) or named inside the shared
//! storage; a worker trains with the serving model's feature spec, logs the run and registers a
//! new version. No alias moves: promotion stays a human decision.

use actix_web::{web, HttpRequest, HttpResponse};
use jobs::{JobKind, JobRecord, JobState, TrainModel, TrainSettings};
use serde_json::json;

use super::jobs::{batch, create_job_dir, save_upload, store_error};
use crate::error::ApiError;
use crate::state::AppState;

/// Training settings from the query string; anything left out takes the training default.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainQuery {
    register_as: Option<String>,
    experiment: Option<String>,
    trees: Option<usize>,
    max_depth: Option<u32>,
    learning_rate: Option<f32>,
    seed: Option<u64>,
    test_fraction: Option<f64>,
    smote: Option<bool>,
    engine: Option<String>,
}

impl TrainQuery {
    fn settings(self, default_name: &str) -> Result<TrainSettings, ApiError> {
        let s = TrainSettings {
            register_as: self.register_as.unwrap_or_else(|| default_name.to_string()),
            experiment: self.experiment.unwrap_or_else(|| "loan-default".into()),
            trees: self.trees.unwrap_or(200),
            max_depth: self.max_depth.unwrap_or(4),
            learning_rate: self.learning_rate.unwrap_or(0.05),
            seed: self.seed.unwrap_or(42),
            test_fraction: self.test_fraction.unwrap_or(0.2),
            smote: self.smote.unwrap_or(true),
            engine: self.engine.unwrap_or_else(|| "hist".into()),
        };
        let mut problems = Vec::new();
        for (what, name) in [
            ("register_as", &s.register_as),
            ("experiment", &s.experiment),
        ] {
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                problems.push(format!("{what} must be 1 to 256 characters"));
            }
        }
        if !(1..=5000).contains(&s.trees) {
            problems.push("trees must be between 1 and 5000".into());
        }
        if !(1..=16).contains(&s.max_depth) {
            problems.push("max_depth must be between 1 and 16".into());
        }
        if !(s.learning_rate > 0.0 && s.learning_rate <= 1.0) {
            problems.push("learning_rate must be in (0, 1]".into());
        }
        if !matches!(s.engine.as_str(), "hist" | "gbdt") {
            problems.push("engine must be hist or gbdt".into());
        }
        if !(s.test_fraction >= 0.05 && s.test_fraction <= 0.5) {
            problems.push("test_fraction must be between 0.05 and 0.5".into());
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ApiError::InvalidBatch(problems.join("; ")))
        }
    }
}

/// The JSON form of the request: a CSV already on the shared storage.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetRef {
    /// Relative to `JOBS_ROOT`.
    dataset_path: String,
}

fn job_json(r: &JobRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "state": r.state,
        "settings": r.params,
        "result": r.output,
        "error": r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "finished_at": r.finished_at,
        "links": {"self": format!("/v1/training-jobs/{}", r.id)},
    })
}

/// A path inside the shared storage: relative, plain components, an existing file, and still
/// inside once symlinks are resolved.
fn dataset_inside(root: &std::path::Path, rel: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::InvalidBatch(
            "dataset_path must name a CSV file inside the shared storage (a relative path without '..')"
                .into(),
        )
    };
    let p = std::path::Path::new(rel);
    if rel.is_empty()
        || rel.len() > 1024
        || !p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad());
    }
    let full = root.join(p);
    let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) else {
        return Err(ApiError::InvalidBatch(format!(
            "dataset_path '{}' does not exist in the shared storage",
            rel.chars().take(200).collect::<String>()
        )));
    };
    if !real.starts_with(&real_root) || !real.is_file() {
        return Err(bad());
    }
    Ok(rel.to_string())
}

/// Checks that the CSV's header has the label and every required model input.
fn check_dataset(path: &std::path::Path, spec: &features::Spec) -> Result<(), ApiError> {
    let mut rdr = csv::Reader::from_path(path)
        .map_err(|e| ApiError::InvalidBatch(format!("the dataset is not a readable CSV: {e}")))?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| ApiError::InvalidBatch(format!("the dataset has no CSV header: {e}")))?
        .iter()
        .map(String::from)
        .collect();
    jobs::split::check_header(spec, &header).map_err(|e| match e {
        jobs::split::SplitError::Invalid(m) => ApiError::InvalidBatch(m),
        other => ApiError::Unexpected(anyhow::anyhow!(other)),
    })?;
    if !header.iter().any(|h| h.trim() == spec.target.name) {
        return Err(ApiError::InvalidBatch(format!(
            "the dataset lacks the label column '{}'",
            spec.target.name
        )));
    }
    if rdr.records().next().is_none() {
        return Err(ApiError::InvalidBatch("the dataset has no rows".into()));
    }
    Ok(())
}

pub async fn create(
    req: HttpRequest,
    query: web::Query<TrainQuery>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = query.into_inner().settings(&state.settings.model_name)?;
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let upload = match ct.as_str() {
        "text/csv" => true,
        "application/json" => false,
        _ => return Err(ApiError::UnsupportedTrainingType),
    };
    let b = batch(&state)?;
    let model = state.models.current().ok_or(ApiError::NotReady)?;
    let spec = model.scorer.bundle().spec.clone();
    let id = jobs::new_job_id();
    let dir = create_job_dir(&b, &id).await?;
    let prepared = async {
        let root = b.layout.root().to_path_buf();
        let dataset = if upload {
            let input = dir.join("input.csv");
            // Training holds the table in memory: the cap keeps a job within a worker's memory.
            save_upload(&mut payload, &input, state.settings.train_max_bytes, None).await?;
            format!("jobs/{id}/input.csv")
        } else {
            let mut body = Vec::new();
            while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
                let chunk =
                    chunk.map_err(|e| ApiError::Malformed(format!("upload interrupted: {e}")))?;
                if body.len() + chunk.len() > 4096 {
                    return Err(ApiError::TooLarge(4096));
                }
                body.extend_from_slice(&chunk);
            }
            let r: DatasetRef = serde_json::from_slice(&body).map_err(|e| {
                ApiError::Malformed(format!(
                    "expected {{\"dataset_path\": \"...\"}}: {}",
                    e.to_string().chars().take(200).collect::<String>()
                ))
            })?;
            let dataset = dataset_inside(&root, &r.dataset_path)?;
            let size = tokio::fs::metadata(root.join(&dataset))
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if size > state.settings.train_max_bytes {
                return Err(ApiError::InvalidBatch(format!(
                    "the dataset is {size} bytes, above the training limit of {} bytes (TRAIN_MAX_BYTES)",
                    state.settings.train_max_bytes
                )));
            }
            dataset
        };
        let (path, spec_check) = (root.join(&dataset), spec.clone());
        tokio::task::spawn_blocking(move || check_dataset(&path, &spec_check))
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!(e)))??;
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!(e)))?;
        tokio::fs::write(dir.join("spec.json"), spec_json)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot store the spec: {e}")))?;
        Ok::<_, ApiError>(dataset)
    };
    let dataset = match prepared.await {
        Ok(d) => d,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
    };
    let record = JobRecord {
        owner: crate::auth::caller(&req).map(|c| c.id),
        ..JobRecord::training(
            id.clone(),
            settings.register_as.clone(),
            serde_json::to_value(&settings).unwrap_or_default(),
        )
    };
    b.store.create(&record).await.map_err(store_error)?;
    let trace_context = telemetry::current_trace_context();
    let task = TrainModel {
        job_id: id.clone(),
        dataset,
        spec: format!("jobs/{id}/spec.json"),
        settings,
        trace_context,
    };
    if let Err(e) = b.train_queue.push_all(vec![task]).await {
        let reason = format!("queueing the training job failed: {e}");
        let _ = b.store.finish(&id, JobState::Failed, &reason).await;
        return Err(ApiError::Unavailable(format!(
            "training jobs are unavailable: {reason}"
        )));
    }
    if let Err(e) = b.store.mark_queued(&id).await {
        tracing::warn!(job.id = %id, error = %e, "cannot record that the training task is queued");
    }
    tracing::info!(job.id = %id, "training job queued");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/training-jobs/{id}")))
        .json(job_json(&record)))
}

async fn training_job(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let b = batch(state)?;
    let not_found = || {
        ApiError::NotFound(format!(
            "training job '{}' not found",
            id.chars().take(64).collect::<String>()
        ))
    };
    if !jobs::is_valid_job_id(id) {
        return Err(not_found());
    }
    let r = b.store.get(id).await.map_err(|e| match e {
        jobs::StoreError::NotFound(_) => not_found(),
        other => store_error(other),
    })?;
    let caller = crate::auth::caller(req);
    if r.kind != JobKind::Train || !crate::auth::may_see(caller.as_ref(), r.owner.as_deref()) {
        return Err(not_found());
    }
    Ok(r)
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let r = training_job(&req, &state, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}

pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    training_job(&req, &state, &id).await?;
    let b = batch(&state)?;
    b.store
        .finish(&id, JobState::Cancelled, "cancelled by the client")
        .await
        .map_err(store_error)?;
    let r = training_job(&req, &state, &id).await?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}
