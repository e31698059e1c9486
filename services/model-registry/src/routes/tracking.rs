//! Experiments, runs, params, metrics and tags (MLflow REST API 2.0).

use actix_web::web;
use serde_json::{json, Value};

use crate::error::{invalid, Result};
use crate::params::{self, Params};
use crate::search::{self, Entity};
use crate::startup::AppState;

use super::{ok, Resp};
use crate::store::{experiments, runs, View};

fn experiment_name(p: &Params, key: &str) -> Result<String> {
    let name = p.str(key)?;
    if name.len() > params::MAX_NAME {
        return invalid(format!(
            "Experiment name exceeds the maximum length of {}",
            params::MAX_NAME
        ));
    }
    Ok(name)
}

/// An experiment's artifact location as MLflow records it: a URI as given (`s3://…`,
/// `file:///…`, `mlflow-artifacts:/…`, the proxy's URL), a relative path made absolute from
/// the server's working directory. Recording is not serving: the server reads and writes only
/// under its own artifact root (`uri_to_relative`); other locations are the client's to use.
fn experiment_location(location: &str) -> Result<String> {
    if location.contains('\0') || location.len() > 4096 {
        return invalid("Invalid artifact location".to_string());
    }
    if crate::artifacts::is_own_store_uri(location) {
        // On this server's own store: refused when it would escape the root.
        crate::artifacts::uri_to_relative(location)?;
        return Ok(location.to_string());
    }
    if crate::artifacts::has_scheme(location) {
        return Ok(location.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        crate::error::RegistryError::Unexpected(anyhow::anyhow!("no working directory: {e}"))
    })?;
    Ok(cwd.join(location).display().to_string())
}

pub async fn create_experiment(p: Params, s: web::Data<AppState>) -> Resp {
    let name = experiment_name(&p, "name")?;
    let location = p
        .opt_str("artifact_location")?
        .filter(|l| !l.is_empty())
        .map(|l| experiment_location(&l))
        .transpose()?;
    let tags = p.key_values("tags", params::MAX_EXPERIMENT_TAG_VALUE)?;
    let root = s.settings.experiment_artifact_root();
    let id =
        experiments::insert_experiment(&s.pool, &name, location.as_deref(), &root, &tags).await?;
    ok(json!({"experiment_id": id.to_string()}))
}

pub async fn get_experiment(p: Params, s: web::Data<AppState>) -> Resp {
    let id = experiments::parse_id(&p.str("experiment_id")?)?;
    let e = experiments::get_experiment(&s.pool, id).await?;
    ok(json!({"experiment": e.json()}))
}

pub async fn get_experiment_by_name(p: Params, s: web::Data<AppState>) -> Resp {
    let e = experiments::get_experiment_by_name(&s.pool, &p.str("experiment_name")?).await?;
    ok(json!({"experiment": e.json()}))
}

pub async fn search_experiments(p: Params, s: web::Data<AppState>) -> Resp {
    let max = search::max_results(p.opt_i64("max_results")?, 1000, 50_000)?;
    let clauses = search::parse_filter(
        &p.opt_str("filter")?.unwrap_or_default(),
        Entity::Experiments,
    )?;
    let mut order = search::parse_order_by(&p.str_list("order_by")?, Entity::Experiments)?;
    if order.is_empty() {
        order.push(search::OrderBy {
            field: search::Field::Attribute("creation_time".into()),
            ascending: false,
        });
    }
    order.push(search::OrderBy {
        field: search::Field::Attribute("experiment_id".into()),
        ascending: true,
    });
    let view = View::parse(p.opt_str("view_type")?.as_deref(), "view_type")?;
    let token = p.opt_str("page_token")?;
    let offset = search::decode_token(token.as_deref())?;
    let pushed =
        experiments::search_page(&s.reader, s.backend, view, &clauses, &order, offset, max).await?;
    let all = experiments::list_experiments(&s.reader, view);
    let (page, next) =
        search::page_or_memory(pushed, offset, max, token.as_deref(), &clauses, &order, all)
            .await?;
    ok(search::page_body(
        "experiments",
        page.iter().map(|e| e.json()).collect(),
        next,
    ))
}

pub async fn update_experiment(p: Params, s: web::Data<AppState>) -> Resp {
    let id = experiments::parse_id(&p.str("experiment_id")?)?;
    experiments::rename_experiment(&s.pool, id, &experiment_name(&p, "new_name")?).await?;
    ok(json!({}))
}

pub async fn delete_experiment(p: Params, s: web::Data<AppState>) -> Resp {
    experiments::set_experiment_stage(
        &s.pool,
        experiments::parse_id(&p.str("experiment_id")?)?,
        "deleted",
    )
    .await?;
    ok(json!({}))
}

pub async fn restore_experiment(p: Params, s: web::Data<AppState>) -> Resp {
    experiments::set_experiment_stage(
        &s.pool,
        experiments::parse_id(&p.str("experiment_id")?)?,
        "active",
    )
    .await?;
    ok(json!({}))
}

pub async fn set_experiment_tag(p: Params, s: web::Data<AppState>) -> Resp {
    let key = p.str("key")?;
    params::check_key(&key)?;
    let value = p.opt_str("value")?.unwrap_or_default();
    params::check_value(&key, &value, params::MAX_EXPERIMENT_TAG_VALUE)?;
    experiments::set_experiment_tag(
        &s.pool,
        experiments::parse_id(&p.str("experiment_id")?)?,
        &key,
        &value,
    )
    .await?;
    ok(json!({}))
}

pub async fn delete_experiment_tag(p: Params, s: web::Data<AppState>) -> Resp {
    experiments::delete_experiment_tag(
        &s.pool,
        experiments::parse_id(&p.str("experiment_id")?)?,
        &p.str("key")?,
    )
    .await?;
    ok(json!({}))
}

pub async fn create_run(p: Params, s: web::Data<AppState>) -> Resp {
    let exp = experiments::parse_id(&p.opt_str("experiment_id")?.unwrap_or_else(|| "0".into()))?;
    let tags = p.key_values("tags", params::MAX_RUN_TAG_VALUE)?;
    let user = p
        .opt_str("user_id")?
        .or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "mlflow.user")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_default();
    let start = p.opt_i64("start_time")?.unwrap_or_else(runs::now);
    let run = runs::insert_run(&s.pool, exp, p.opt_str("run_name")?, &user, start, &tags).await?;
    ok(json!({"run": run.json()}))
}

pub async fn get_run(p: Params, s: web::Data<AppState>) -> Resp {
    let run = runs::get_run(&s.pool, &p.str_either("run_id", "run_uuid")?).await?;
    ok(json!({"run": run.json()}))
}

pub async fn update_run(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str_either("run_id", "run_uuid")?;
    let info = runs::update_run(
        &s.pool,
        &run_id,
        p.opt_str("status")?.as_deref(),
        p.opt_i64("end_time")?,
        p.opt_str("run_name")?.as_deref(),
    )
    .await?;
    ok(json!({"run_info": info.info_json()}))
}

pub async fn delete_run(p: Params, s: web::Data<AppState>) -> Resp {
    runs::set_run_stage(&s.pool, &p.str("run_id")?, "deleted").await?;
    ok(json!({}))
}

pub async fn restore_run(p: Params, s: web::Data<AppState>) -> Resp {
    runs::set_run_stage(&s.pool, &p.str("run_id")?, "active").await?;
    ok(json!({}))
}

fn metric_in(p: &Params) -> Result<runs::MetricIn> {
    let key = p.str("key")?;
    params::check_key(&key)?;
    let value = p.opt_f64("value")?.ok_or_else(|| {
        crate::error::RegistryError::InvalidParameter(
            "Missing value for required parameter 'value'.".into(),
        )
    })?;
    Ok(runs::MetricIn {
        key,
        value,
        timestamp: p.opt_i64("timestamp")?.unwrap_or_else(runs::now),
        step: p.opt_i64("step")?.unwrap_or(0),
        model_id: p.opt_str("model_id")?.filter(|m| !m.is_empty()),
        dataset_name: p.opt_str("dataset_name")?,
        dataset_digest: p.opt_str("dataset_digest")?,
    })
}

pub async fn log_metric(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str_either("run_id", "run_uuid")?;
    runs::log_batch(&s.pool, &run_id, &[metric_in(&p)?], &[], &[]).await?;
    ok(json!({}))
}

pub async fn log_param(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str_either("run_id", "run_uuid")?;
    let key = p.str("key")?;
    params::check_key(&key)?;
    let value = p.opt_str("value")?.unwrap_or_default();
    params::check_value(&key, &value, params::MAX_PARAM_VALUE)?;
    runs::log_batch(&s.pool, &run_id, &[], &[(key, value)], &[]).await?;
    ok(json!({}))
}

pub async fn set_tag(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str_either("run_id", "run_uuid")?;
    let key = p.str("key")?;
    params::check_key(&key)?;
    let value = p.opt_str("value")?.unwrap_or_default();
    params::check_value(&key, &value, params::MAX_RUN_TAG_VALUE)?;
    runs::log_batch(&s.pool, &run_id, &[], &[], &[(key, value)]).await?;
    ok(json!({}))
}

pub async fn delete_tag(p: Params, s: web::Data<AppState>) -> Resp {
    runs::delete_tag(&s.pool, &p.str("run_id")?, &p.str("key")?).await?;
    ok(json!({}))
}

pub async fn log_batch(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str("run_id")?;
    let metrics = p.objects("metrics")?;
    let params_ = p.key_values("params", params::MAX_PARAM_VALUE)?;
    let tags = p.key_values("tags", params::MAX_RUN_TAG_VALUE)?;
    // MLflow's limits for one batch.
    if metrics.len() > 1000 {
        return invalid(format!(
            "A batch logging request can contain at most 1000 metrics. Got {} metrics.",
            metrics.len()
        ));
    }
    if params_.len() + tags.len() > 100 {
        return invalid(
            "A batch logging request can contain at most 100 params and tags together.",
        );
    }
    if let Some(i) = metrics.iter().position(|m| m.get("timestamp").is_none()) {
        return invalid(format!(
            "Missing value for required parameter 'metrics[{i}].timestamp'"
        ));
    }
    let metrics = metrics.iter().map(metric_in).collect::<Result<Vec<_>>>()?;
    runs::log_batch(&s.pool, &run_id, &metrics, &params_, &tags).await?;
    ok(json!({}))
}

pub async fn log_inputs(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str("run_id")?;
    let datasets: Vec<Value> = match p.get("datasets") {
        Some(Value::Array(a)) => a.clone(),
        None => Vec::new(),
        Some(other) => return params::bad_value("datasets", other),
    };
    let models = p
        .objects("models")?
        .iter()
        .map(|m| m.str("model_id"))
        .collect::<Result<Vec<_>>>()?;
    runs::log_inputs(&s.pool, &run_id, &datasets, &models).await?;
    ok(json!({}))
}

pub async fn log_outputs(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str("run_id")?;
    let models = p
        .objects("models")?
        .iter()
        .map(|m| Ok((m.str("model_id")?, m.opt_i64("step")?.unwrap_or(0))))
        .collect::<Result<Vec<_>>>()?;
    runs::log_outputs(&s.pool, &run_id, &models).await?;
    ok(json!({}))
}

pub async fn metric_history(p: Params, s: web::Data<AppState>) -> Resp {
    let run_id = p.str_either("run_id", "run_uuid")?;
    let max = search::max_results(p.opt_i64("max_results")?, 25_000, 25_000)?;
    let all = runs::metric_history(&s.pool, &run_id, &p.str("metric_key")?).await?;
    let (page, next) = search::page(all, p.opt_str("page_token")?.as_deref(), max)?;
    let mut out = json!({"metrics": page.iter().map(runs::Metric::json).collect::<Vec<_>>()});
    if let Some(t) = next {
        out["next_page_token"] = json!(t);
    }
    ok(out)
}

/// At most this many runs in one bulk history request (MLflow's limit).
const MAX_BULK_RUNS: usize = 100;

/// A metric point of a run, as the bulk history endpoints return it.
fn bulk_point(run_id: &str, m: &runs::Metric) -> Value {
    let mut v = m.json();
    v["run_id"] = json!(run_id);
    v
}

/// `GET metrics/get-history-bulk?run_id=…&run_id=…&metric_key=…` (MLflow's UI endpoint): the
/// histories of one metric for several runs, by run, then time, step and value.
pub async fn metric_history_bulk(p: Params, s: web::Data<AppState>) -> Resp {
    let mut ids = p.str_list("run_id")?;
    if ids.is_empty() {
        return invalid("GetMetricHistoryBulk request must specify at least one run_id.");
    }
    if ids.len() > MAX_BULK_RUNS {
        return invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. Received {} run_ids.",
            ids.len()
        ));
    }
    let Some(key) = p.opt_str("metric_key")?.filter(|k| !k.is_empty()) else {
        return invalid("GetMetricHistoryBulk request must specify a metric_key.");
    };
    let max = search::max_results(p.opt_i64("max_results")?, 25_000, 25_000)?;
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in &ids {
        let mut history = runs::metric_history(&s.reader, id, &key).await?;
        history.sort_by(|a, b| {
            (a.timestamp, a.step)
                .cmp(&(b.timestamp, b.step))
                .then(a.value.total_cmp(&b.value))
        });
        out.extend(history.iter().map(|m| bulk_point(id, m)));
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    ok(json!({ "metrics": out }))
}

/// `GET metrics/get-history-bulk-interval?run_ids=…&metric_key=…[&start_step&end_step]
/// [&max_results]` (MLflow's UI endpoint for charts): the points at up to `max_results` steps
/// spread evenly over the steps the runs have (first and last included).
pub async fn metric_history_bulk_interval(p: Params, s: web::Data<AppState>) -> Resp {
    let mut ids = p.str_list("run_ids")?;
    if ids.is_empty() {
        return invalid("Missing value for required parameter 'run_ids'.");
    }
    if ids.len() > MAX_BULK_RUNS {
        return invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. Received {} run_ids.",
            ids.len()
        ));
    }
    let max = p.opt_i64("max_results")?.unwrap_or(320);
    if !(1..=2500).contains(&max) {
        return invalid(format!(
            "max_results must be between 1 and 2500. Received {max}."
        ));
    }
    let Some(key) = p.opt_str("metric_key")?.filter(|k| !k.is_empty()) else {
        return invalid("Missing value for required parameter 'metric_key'.");
    };
    let (start, end) = match (p.opt_i64("start_step")?, p.opt_i64("end_step")?) {
        (Some(a), Some(b)) if a > b => {
            return invalid(format!(
                "end_step must be greater than start_step. Found start_step={a} and end_step={b}."
            ))
        }
        (Some(a), Some(b)) => (a, b),
        (None, None) => (i64::MIN, i64::MAX),
        _ => {
            return invalid(
                "If either start step or end step are specified, both must be specified.",
            )
        }
    };
    ids.sort();
    ids.dedup();
    let mut histories = Vec::new();
    for id in &ids {
        let history: Vec<runs::Metric> = runs::metric_history(&s.reader, id, &key)
            .await?
            .into_iter()
            .filter(|m| (start..=end).contains(&m.step))
            .collect();
        histories.push((id, history));
    }
    let mut steps: Vec<i64> = histories
        .iter()
        .flat_map(|(_, h)| h.iter().map(|m| m.step))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let keep: std::collections::HashSet<i64> = sample_steps(&steps, max as usize);
    let mut out = Vec::new();
    for (id, history) in &histories {
        out.extend(
            history
                .iter()
                .filter(|m| keep.contains(&m.step))
                .map(|m| bulk_point(id, m)),
        );
    }
    ok(json!({ "metrics": out }))
}

/// Up to `max` (plus the last) of sorted, distinct `steps`, evenly spaced, first and last kept.
fn sample_steps(steps: &[i64], max: usize) -> std::collections::HashSet<i64> {
    if steps.len() <= max {
        return steps.iter().copied().collect();
    }
    let stride = steps.len().div_ceil(max);
    let mut keep: std::collections::HashSet<i64> = steps.iter().step_by(stride).copied().collect();
    keep.extend(steps.last());
    keep
}

pub async fn search_runs(p: Params, s: web::Data<AppState>) -> Resp {
    let max = search::max_results(p.opt_i64("max_results")?, 1000, 50_000)?;
    let ids = p
        .str_list("experiment_ids")?
        .iter()
        .map(|i| experiments::parse_id(i))
        .collect::<Result<Vec<_>>>()?;
    let clauses = search::parse_filter(&p.opt_str("filter")?.unwrap_or_default(), Entity::Runs)?;
    let order = runs::with_tiebreaks(search::parse_order_by(
        &p.str_list("order_by")?,
        Entity::Runs,
    )?);
    let view = View::parse(p.opt_str("run_view_type")?.as_deref(), "run_view_type")?;
    let token = p.opt_str("page_token")?;
    let offset = search::decode_token(token.as_deref())?;
    // Both statements of the page on one connection.
    let mut conn = s.runs_reader.acquire().await?;
    let pushed = runs::search_page(
        &mut conn, s.backend, &ids, view, &clauses, &order, offset, max,
    )
    .await?;
    drop(conn);
    let all = runs::list_runs(&s.reader, &ids, view);
    let (page, next) =
        search::page_or_memory(pushed, offset, max, token.as_deref(), &clauses, &order, all)
            .await?;
    ok(search::page_body(
        "runs",
        page.iter().map(runs::Run::json).collect(),
        next,
    ))
}

/// `GET /artifacts/list?run_id=&path=`: a run's artifacts, with run-relative paths.
pub async fn list_run_artifacts(p: Params, s: web::Data<AppState>) -> Resp {
    let run = runs::get_run_info(&s.pool, &p.str_either("run_id", "run_uuid")?).await?;
    let sub = crate::artifacts::check_relative(&p.opt_str("path")?.unwrap_or_default())?;
    let (store, root) = s.store_for(&run.artifact_uri)?;
    let files = store.list(&crate::artifacts::join(&root, &sub)).await?;
    let files = crate::artifacts::listing_json(files, &sub);
    ok(json!({"root_uri": run.artifact_uri, "files": files}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sampled_steps_are_even_and_keep_both_ends() {
        let steps: Vec<i64> = (0..10).collect();
        let mut got: Vec<i64> = super::sample_steps(&steps, 5).into_iter().collect();
        got.sort();
        assert_eq!(got, [0, 2, 4, 6, 8, 9]);
        assert_eq!(super::sample_steps(&steps, 20).len(), 10);
        assert!(super::sample_steps(&[], 5).is_empty());
    }
}
