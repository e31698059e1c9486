//! The serving model: loaded from a local bundle or resolved through the registry, checked,
//! and swapped in atomically. Requests hold an `Arc` of the model they started with, so a swap
//! never disturbs one in flight; a model that fails to load or check never replaces the
//! serving one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use model::{Bundle, Scorer};

use crate::config::Settings;
use crate::metrics;

/// A model ready to serve.
pub struct ServingModel {
    pub scorer: Scorer,
    pub name: String,
    pub version: String,
    /// SHA-256 of the bundle file (recorded with each decision).
    pub bundle_sha256: String,
    /// The thresholds as JSON (recorded with each decision).
    pub thresholds_json: String,
    /// Where it came from (a directory or `models:/…`).
    pub source: String,
    pub loaded_at: String,
    /// The drift watch over its last decisions (`DRIFT_WINDOW`), when the bundle has a
    /// baseline; the serving model's only (a shadow's is `None`).
    pub drift: Option<model::drift::Monitor>,
}

/// Where models come from.
enum Source {
    Local(PathBuf),
    Registry {
        client: mlflow_client::Client,
        reference: mlflow_client::ModelRef,
    },
}

pub struct Models {
    /// Serves the answers (`false`) or scores in the shadow (`true`).
    shadow: bool,
    current: ArcSwapOption<ServingModel>,
    source: Source,
    cache_dir: PathBuf,
    /// Decisions in the drift window of each model loaded (0: none).
    drift_window: usize,
    poll: Duration,
    wake: tokio::sync::Notify,
    /// One check at a time (poller and operator reloads).
    checking: tokio::sync::Mutex<()>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Unchanged,
    Swapped { version: String },
}

impl Models {
    /// The serving model: `MODEL_URI`, or `MODEL_NAME` at `MODEL_ALIAS`.
    pub fn new(settings: &Settings) -> anyhow::Result<Models> {
        Models::build(
            settings,
            settings.model_uri.as_deref(),
            &settings.model_alias,
            false,
        )
    }

    /// The shadow model, when `SHADOW_MODEL_URI` or `MODEL_SHADOW_ALIAS` is set.
    pub fn shadow(settings: &Settings) -> anyhow::Result<Option<Models>> {
        let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        if !(0.0..=1.0).contains(&settings.shadow_sample) {
            anyhow::bail!("SHADOW_SAMPLE must be between 0 and 1");
        }
        Ok(
            match (set(&settings.shadow_model_uri), set(&settings.shadow_alias)) {
                (Some(uri), _) => Some(Models::build(settings, Some(&uri), "", true)?),
                (None, Some(alias)) => Some(Models::build(settings, None, &alias, true)?),
                (None, None) => None,
            },
        )
    }

    fn build(
        settings: &Settings,
        uri: Option<&str>,
        alias: &str,
        shadow: bool,
    ) -> anyhow::Result<Models> {
        let client = || settings.registry.client();
        let source = match uri {
            Some(uri) if uri.starts_with("models:/") => Source::Registry {
                client: client()?,
                reference: mlflow_client::ModelRef::parse(uri)?,
            },
            Some(dir) if !dir.is_empty() => Source::Local(PathBuf::from(dir)),
            _ => Source::Registry {
                client: client()?,
                reference: mlflow_client::ModelRef::Alias {
                    name: settings.model_name.clone(),
                    alias: alias.to_string(),
                },
            },
        };
        Ok(Models {
            shadow,
            current: ArcSwapOption::empty(),
            source,
            cache_dir: settings.model_cache_dir.clone(),
            drift_window: if shadow { 0 } else { settings.drift_window },
            poll: Duration::from_secs(settings.poll_seconds.max(1)),
            wake: tokio::sync::Notify::new(),
            checking: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether this follows `alias` of `name` in the registry.
    pub fn follows(&self, name: &str, alias: &str) -> bool {
        matches!(&self.source, Source::Registry {
            reference: mlflow_client::ModelRef::Alias { name: n, alias: a },
            ..
        } if n == name && a == alias)
    }

    /// The registry client, when the model comes from the registry.
    pub fn registry(&self) -> Option<&mlflow_client::Client> {
        match &self.source {
            Source::Registry { client, .. } => Some(client),
            Source::Local(_) => None,
        }
    }

    /// The model serving now, if any.
    pub fn current(&self) -> Option<Arc<ServingModel>> {
        self.current.load_full()
    }

    /// Loads the model if it changed; on failure the serving model stays.
    pub async fn check(&self) -> Result<Checked, String> {
        let _one = self.checking.lock().await;
        let result = self.check_inner().await;
        match &result {
            Ok(Checked::Swapped { version }) => {
                metrics::model_reloads().inc();
                tracing::info!(model.version = %version, "model swapped in");
            }
            Ok(Checked::Unchanged) => {}
            Err(e) => {
                metrics::model_load_failures().inc();
                let e_msg = &e.message;
                if self.current().is_some() {
                    tracing::warn!(error = %e_msg, "model check failed; still serving the current model");
                } else if e.not_registered {
                    // A normal first start: nothing is registered (or has the alias) yet.
                    // `/readyz` says so; the poller keeps looking.
                    tracing::debug!(error = %e_msg, "no model to load yet");
                } else {
                    tracing::warn!(error = %e_msg, "model check failed; no model is loaded yet");
                }
            }
        }
        result.map_err(|e| e.message)
    }

    async fn check_inner(&self) -> Result<Checked, CheckError> {
        match &self.source {
            Source::Local(dir) => {
                if self.current().is_some() {
                    return Ok(Checked::Unchanged);
                }
                let dir = dir.clone();
                let window = self.drift_window;
                let loaded = tokio::task::spawn_blocking(move || load_dir(&dir, None, window))
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(self.swap(loaded))
            }
            Source::Registry { client, reference } => {
                let mv = client.resolve(reference).await.map_err(|e| CheckError {
                    not_registered: e.code() == Some("RESOURCE_DOES_NOT_EXIST"),
                    message: format!("cannot resolve the model in the registry: {e}"),
                })?;
                if let Some(cur) = self.current() {
                    if cur.name == mv.name && cur.version == mv.version {
                        return Ok(Checked::Unchanged);
                    }
                }
                let uri = client
                    .get_download_uri(&mv.name, &mv.version)
                    .await
                    .map_err(|e| e.to_string())?;
                // A fresh directory per attempt, so a half-finished download is never loaded,
                // removed whatever happens: the bundle is kept in memory, not on disk.
                let dest = self.cache_dir.join(format!(
                    "{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                let loaded = fetch(client, &mv, &uri, &dest, self.drift_window).await;
                if let Err(e) = tokio::fs::remove_dir_all(&dest).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dest.display(), error = %e, "cannot remove a downloaded bundle");
                    }
                }
                Ok(self.swap(loaded?))
            }
        }
    }

    fn swap(&self, model: ServingModel) -> Checked {
        let version = model.version.clone();
        if !self.shadow {
            metrics::set_serving_version(&model.name, &version);
        }
        self.current.store(Some(Arc::new(model)));
        Checked::Swapped { version }
    }

    /// Asks the poller to check now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Loads at start (retrying with backoff while nothing serves), then follows the alias.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let ok = self.check().await.is_ok();
            let wait = if self.current().is_none() && !ok {
                backoff = (backoff * 2).min(Duration::from_secs(30)).min(self.poll);
                backoff
            } else {
                backoff = Duration::from_millis(250);
                self.poll
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// Why a model check failed.
struct CheckError {
    message: String,
    /// The registry has no such model or alias (yet): expected before the first registration.
    not_registered: bool,
}

impl From<String> for CheckError {
    fn from(message: String) -> CheckError {
        CheckError {
            message,
            not_registered: false,
        }
    }
}

/// Downloads a registered version into `dest` and loads it.
async fn fetch(
    client: &mlflow_client::Client,
    mv: &mlflow_client::ModelVersion,
    uri: &str,
    dest: &std::path::Path,
    drift_window: usize,
) -> Result<ServingModel, String> {
    let n = client
        .download_artifacts(uri, dest)
        .await
        .map_err(|e| format!("cannot download version {}: {e}", mv.version))?;
    if n == 0 {
        return Err(format!(
            "version {} of {} has no files at {uri}",
            mv.version, mv.name
        ));
    }
    let registered = Some((mv.name.clone(), mv.version.clone()));
    let d = dest.to_path_buf();
    tokio::task::spawn_blocking(move || load_dir(&d, registered, drift_window))
        .await
        .map_err(|e| e.to_string())?
}

/// Loads and checks a bundle directory.
fn load_dir(
    dir: &std::path::Path,
    registered: Option<(String, String)>,
    drift_window: usize,
) -> Result<ServingModel, String> {
    let file = model::bundle::locate(dir).map_err(|e| e.to_string())?;
    // Which file: MODEL_URI may name a bundle, its model.json, or a training output folder.
    tracing::info!(bundle = %file.display(), "loading the model bundle");
    let (bundle, bundle_sha256) =
        Bundle::load_with_digest(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let thresholds_json = serde_json::to_string(&bundle.thresholds).map_err(|e| e.to_string())?;
    let scorer = Scorer::new(bundle).map_err(|e| e.to_string())?;
    smoke_test(&scorer)?;
    let (name, version) =
        registered.unwrap_or_else(|| ("local".into(), scorer.bundle().model_uuid.clone()));
    let drift = scorer
        .bundle()
        .drift_baseline
        .as_ref()
        .filter(|_| drift_window > 0)
        .map(|b| model::drift::Monitor::new(b, drift_window));
    if drift_window > 0 && drift.is_none() {
        tracing::warn!(
            model.version = %version,
            "the model has no drift baseline (imported without --data?): no drift figures"
        );
    }
    Ok(ServingModel {
        drift,
        name,
        version,
        bundle_sha256,
        thresholds_json,
        source: dir.display().to_string(),
        loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        scorer,
    })
}

/// A model must produce a finite probability and finite reasons before it serves.
fn smoke_test(scorer: &Scorer) -> Result<(), String> {
    let w = scorer.preprocessor().width();
    let mut scratch = scorer.scratch();
    let mut top = Vec::new();
    for fill in [0.0f32, 1.0, -1.0] {
        let row = vec![fill; w];
        let p = scorer
            .calibration()
            .apply(f64::from(scorer.predictor().margin(&row)));
        if !p.is_finite() || !(0.0..=1.0).contains(&p) {
            return Err(format!("smoke test failed: probability {p}"));
        }
        scorer.top_reasons(&row, &mut scratch, &mut top);
        if top.iter().any(|(_, c)| !c.is_finite()) {
            return Err("smoke test failed: non-finite reason contribution".into());
        }
    }
    Ok(())
}
