//! Logging a training run to the model registry and registering its bundle.

use std::path::Path;

use anyhow::{Context, Result};
use mlflow_client::Client;

/// Where a training run goes.
pub struct Run<'a> {
    pub experiment: &'a str,
    /// The registered model that gets the new version.
    pub name: &'a str,
    /// Moved to the new version when given.
    pub alias: Option<&'a str>,
    /// The `mlflow.source.name` tag.
    pub source: &'a str,
}

/// The logged run and the registered version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub run_id: String,
    pub model_name: String,
    pub version: String,
    pub experiment_id: String,
}

/// Logs params, metrics and everything in `out` (bundle as `model/`, report, plots) as one run,
/// registers `runs:/<run>/model` as a new version of `name`, and optionally moves `alias` to it.
pub fn log_and_register(
    url: &str,
    run_to: &Run<'_>,
    out: &Path,
    params: &[(String, String)],
    metrics: &[(String, f64, i64)],
) -> Result<Registered> {
    let Run {
        experiment,
        name,
        alias,
        source,
    } = *run_to;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::from_env(url)?;
        let exp = client
            .get_or_create_experiment(experiment)
            .await
            .with_context(|| format!("cannot reach the registry at {url}"))?;
        let user = std::env::var("USER").unwrap_or_default();
        let tags = [
            ("mlflow.source.name".to_string(), source.to_string()),
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
            ("mlflow.user".to_string(), user),
        ];
        let run_name = format!(
            "train-{}",
            out.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        let run = client.create_run(&exp, &run_name, &tags).await?;
        let logged = async {
            client.log_batch(&run.run_id, params, metrics).await?;
            let files = client.upload_dir(&run.artifact_uri, "", out).await?;
            anyhow::Ok(files)
        }
        .await;
        let files = match logged {
            Ok(n) => {
                client.end_run(&run.run_id, "FINISHED").await?;
                n
            }
            Err(e) => {
                let _ = client.end_run(&run.run_id, "FAILED").await;
                return Err(e.context("logging the run failed"));
            }
        };
        client.ensure_registered_model(name).await?;
        let mv = client
            .create_model_version(name, &format!("runs:/{}/model", run.run_id), &run.run_id)
            .await?;
        if let Some(alias) = alias {
            client.set_alias(name, alias, &mv.version).await?;
        }
        eprintln!(
            "logged run {} ({files} files) to {url}; registered {name} version {}{}",
            run.run_id,
            mv.version,
            alias
                .map(|a| format!(", alias {a} -> {}", mv.version))
                .unwrap_or_default()
        );
        Ok(Registered {
            run_id: run.run_id.clone(),
            model_name: name.to_string(),
            version: mv.version.clone(),
            experiment_id: exp.clone(),
        })
    })
}
