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
    /// The training job this run belongs to, kept as the [`JOB_TAG`] tag of the run and of the
    /// version, so a redelivered job finds the version it already registered.
    pub job_id: Option<&'a str>,
}

/// The tag naming the training job that registered a version.
pub const JOB_TAG: &str = "loanctl_job_id";

/// The version a training job already registered as `name`, if any (a job is delivered again
/// when its worker dies after registering and before recording it).
pub async fn registered_by_job(
    client: &Client,
    name: &str,
    job_id: &str,
) -> Result<Option<Registered>> {
    // By the tag alone: job ids are letters, digits and dashes, safe inside quotes; names
    // are not, so they are compared here.
    anyhow::ensure!(
        jobs_id_is_plain(job_id),
        "invalid job id '{job_id}' for a registry search"
    );
    let filter = format!("tags.{JOB_TAG} = '{job_id}'");
    let found = client.search_model_versions(&filter).await?;
    let Some(mv) = found.into_iter().find(|v| v.name == name) else {
        return Ok(None);
    };
    let run = client.get_run(&mv.run_id).await?;
    Ok(Some(Registered {
        run_id: mv.run_id,
        model_name: mv.name,
        version: mv.version,
        experiment_id: run.experiment_id,
    }))
}

/// The logged run and the registered version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub run_id: String,
    pub model_name: String,
    pub version: String,
    pub experiment_id: String,
}

fn jobs_id_is_plain(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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
        job_id,
    } = *run_to;
    let job_tags: Vec<(String, String)> = job_id
        .map(|id| (JOB_TAG.to_string(), id.to_string()))
        .into_iter()
        .collect();
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
        let mut tags = vec![
            ("mlflow.source.name".to_string(), source.to_string()),
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
            ("mlflow.user".to_string(), user),
        ];
        tags.extend(job_tags.iter().cloned());
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
            .create_model_version(
                name,
                &format!("runs:/{}/model", run.run_id),
                &run.run_id,
                &job_tags,
            )
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
