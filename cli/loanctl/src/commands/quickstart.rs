//! `loanctl quickstart`: the whole platform in one process, with nothing else to install. The
//! registry (SQLite and local artifacts in a data folder), a first model trained on the bundled
//! German-credit data and registered as `loan-default@champion`, and the API with its in-process
//! batch worker. A second run reuses the folder (and the model); Ctrl-C stops everything.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

const DATA: &str = include_str!("../../../../data/german_credit.csv");
const SPEC: &str = include_str!("../../../../data/german_credit.spec.json");
const MODEL: &str = "loan-default";
const ALIAS: &str = "champion";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the registry database, artifacts, batch files and the bundled data.
    #[arg(long, default_value = "loanctl-data/quickstart")]
    pub data_dir: PathBuf,
    /// Port of the model registry (MLflow REST API); 0 picks a free one.
    #[arg(long, default_value_t = 5000)]
    pub registry_port: u16,
    /// Port of the scoring API; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    pub api_port: u16,
    /// Trees of the first model.
    #[arg(long, default_value_t = 200)]
    pub trees: usize,
}

pub fn run(a: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
    let dir = a
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot use {}", a.data_dir.display()))?;
    let data = dir.join("german_credit.csv");
    let spec = dir.join("german_credit.spec.json");
    std::fs::write(&data, DATA)?;
    std::fs::write(&spec, SPEC)?;
    eprintln!("quickstart: data folder {}", dir.display());

    // The registry.
    let registry_dir = dir.join("registry");
    let settings = model_registry::Settings::try_parse_from([
        "model-registry".to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        a.registry_port.to_string(),
        "--data-dir".into(),
        registry_dir.display().to_string(),
        "--backend-store-uri".into(),
        model_registry::store::sqlite_url(&registry_dir.join("registry.db")),
        "--artifacts-destination".into(),
        registry_dir.join("artifacts").display().to_string(),
    ])?;
    std::fs::create_dir_all(&registry_dir)?;
    let registry = model_registry::Application::build(settings)
        .await
        .with_context(|| {
            format!(
                "cannot start the registry on port {} (in use? pick another with --registry-port)",
                a.registry_port
            )
        })?;
    let registry_url = format!("http://127.0.0.1:{}", registry.port());
    let registry_handle = registry.handle();
    tokio::spawn(registry.run_until_stopped());
    eprintln!("quickstart: registry up at {registry_url}");

    // The first model, unless an earlier run registered one.
    let client = mlflow_client::Client::new(&registry_url, None)?;
    let champion = mlflow_client::ModelRef::Alias {
        name: MODEL.into(),
        alias: ALIAS.into(),
    };
    match client.resolve(&champion).await {
        Ok(v) => eprintln!(
            "quickstart: found {MODEL}@{ALIAS} (version {}); not training again",
            v.version
        ),
        Err(_) => {
            eprintln!(
                "quickstart: training the first model on the bundled German-credit data ({} trees)",
                a.trees
            );
            let mut cfg = training::Config::new(data.clone(), spec.clone(), dir.join("training"));
            cfg.model.booster.trees = a.trees;
            cfg.registry = Some(training::Registry {
                url: registry_url.clone(),
                experiment: "loan-default".into(),
                register_as: MODEL.into(),
                alias: Some(ALIAS.into()),
                source: "loanctl quickstart".into(),
                job_id: None,
            });
            let trained = tokio::task::spawn_blocking(move || {
                crate::commands::train::train_with_progress(&cfg, false)
            })
            .await??;
            eprintln!(
                "quickstart: test ROC AUC {:.3}",
                trained.metrics["test_roc_auc"].as_f64().unwrap_or(0.0)
            );
        }
    }

    // The API, with batch jobs on its in-process queue and the decision audit log in the data
    // folder (unless AUDIT_URL names another).
    let audit_url = std::env::var("AUDIT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("audit.db").display()));
    let settings = api::Settings::try_parse_from([
        "api".to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        a.api_port.to_string(),
        "--tracking-uri".into(),
        registry_url.clone(),
        "--model-name".into(),
        MODEL.into(),
        "--model-alias".into(),
        ALIAS.into(),
        "--poll-seconds".into(),
        "5".into(),
        "--model-cache-dir".into(),
        dir.join("api-models").display().to_string(),
        "--jobs-root".into(),
        dir.join("batch").display().to_string(),
        "--audit-url".into(),
        audit_url.clone(),
    ])?;
    if settings.redis_url.is_some() {
        bail!("REDIS_URL is set; quickstart runs batch jobs in process, so unset it first");
    }
    let app = api::Application::build(settings).await.with_context(|| {
        format!(
            "cannot start the API on port {} (in use? pick another with --api-port)",
            a.api_port
        )
    })?;
    let api_url = format!("http://127.0.0.1:{}", app.port());
    let api_handle = app.handle();
    let api_task = tokio::spawn(app.run_until_stopped());
    wait_ready(&api_url).await?;
    println!(
        "{}",
        banner(&api_url, &registry_url, &dir, &data, &audit_url)?
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    eprintln!("quickstart: stopping");
    api_handle.stop(true).await;
    // The API writes its queued audit records before this ends.
    let _ = api_task.await;
    registry_handle.stop(true).await;
    eprintln!("quickstart: stopped; run it again to pick up where you left off");
    Ok(())
}

/// Waits for the API's readiness (the model loaded from the registry), up to a minute.
async fn wait_ready(api_url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http
            .get(format!("{api_url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the API did not become ready within 60 s; see the log above")
}

/// URLs and copy-paste examples, with an application taken from the bundled data.
fn banner(
    api_url: &str,
    registry_url: &str,
    dir: &Path,
    data: &Path,
    audit_url: &str,
) -> Result<String> {
    let spec = features::Spec::from_json(SPEC)?;
    let mut rdr = csv::Reader::from_reader(DATA.as_bytes());
    let headers = rdr.headers()?.clone();
    let first = rdr.records().next().context("bundled data has rows")??;
    let mut app = serde_json::Map::new();
    for f in spec.features.iter().filter(|f| f.is_model_input()) {
        let Some(c) = headers.iter().position(|h| h == f.name) else {
            continue;
        };
        let v = &first[c];
        let value = match f.kind {
            features::FeatureKind::Numeric => v
                .parse::<f64>()
                .map_or_else(|_| serde_json::json!(v), |n| serde_json::json!(n)),
            _ => serde_json::json!(v),
        };
        app.insert(f.name.clone(), value);
    }
    let app = serde_json::Value::Object(app).to_string();
    Ok(format!(
        "\nThe loan-default scoring platform is running.\n\n\
         \x20 API             {api_url}\n\
         \x20 OpenAPI docs    {api_url}/docs\n\
         \x20 Registry UI     {registry_url}/  (runs, plots, models; promote a version there)\n\
         \x20 MLflow REST API MLFLOW_TRACKING_URI={registry_url}\n\
         \x20 Data folder     {dir}\n\n\
         Score one application:\n\n\
         \x20 curl -s {api_url}/v1/predict -H 'content-type: application/json' \\\n\
         \x20   -d '{app}'\n\n\
         Score a file in the background (batch job):\n\n\
         \x20 curl -si {api_url}/v1/batch-jobs -H 'content-type: text/csv' --data-binary @{data}\n\
         \x20 curl -s {api_url}/v1/batch-jobs/<id>           # progress\n\
         \x20 curl -s {api_url}/v1/batch-jobs/<id>/results   # CSV; add -H 'accept: application/x-ndjson' for NDJSON\n\n\
         Retrain (registers a new version; promote it on {registry_url}/model?name=loan-default):\n\n\
         \x20 curl -si {api_url}/v1/training-jobs -H 'content-type: text/csv' --data-binary @{data}\n\n\
         Every decision is recorded ({audit_url}); read one back, or replay them all:\n\n\
         \x20 curl -s {api_url}/v1/decisions/<request_id>\n\
         \x20 loanctl replay --audit-url {audit_url} --registry {registry_url}\n\n\
         Ctrl-C stops everything.\n",
        dir = dir.display(),
        data = data.display(),
    ))
}
