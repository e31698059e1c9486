//! A typed async client of the MLflow REST API, as our registry (or a real MLflow server)
//! speaks it: runs, params and metrics, artifacts (streamed both ways), registered models,
//! versions and aliases, and `models:/` URIs resolved to a downloaded model directory.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Where the registry is and how long a call may wait for it: the flags and variables every
/// service that calls the registry reads (flattened into their settings).
#[cfg(feature = "settings")]
#[derive(clap::Args, Debug, Clone)]
// Its own argument-group id: the services flatten several `Settings`, and clap refuses two
// groups of one name (a panic at start in debug builds).
#[group(id = "registry-settings")]
pub struct Settings {
    /// Where the model registry is (the MLflow client's own variable).
    #[arg(
        long,
        env = "MLFLOW_TRACKING_URI",
        default_value = "http://localhost:5000"
    )]
    pub tracking_uri: String,
    /// Seconds a registry call may wait for the registry's next bytes before it fails (a stalled
    /// registry must not hold a model poller or a job).
    #[arg(long, env = "REGISTRY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub registry_timeout_seconds: u64,
}

#[cfg(feature = "settings")]
impl Settings {
    /// A client of the registry with these settings (credentials and TLS from the environment).
    pub fn client(&self) -> Result<Client> {
        Client::from_env_with_timeout(
            &self.tracking_uri,
            std::time::Duration::from_secs(self.registry_timeout_seconds.max(1)),
        )
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an MLflow error body.
    #[error("{code} ({status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// With the causes (a certificate the client does not trust, a refused connection).
    #[error("request to the registry failed: {}", causes(.0))]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

/// An error and its sources, joined: reqwest's own message hides why a connection failed.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl ClientError {
    /// The MLflow error code, if the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// How the client checks the registry's certificate on `https://` URIs: the system's CAs
/// (rustls with the native store), plus CA bundles from `SSL_CERT_FILE` and MLflow's
/// `MLFLOW_TRACKING_SERVER_CERT_PATH`; `MLFLOW_TRACKING_INSECURE_TLS=true` turns checking off
/// (tests only), as in the Python client.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM files of extra CAs to trust.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Accept any certificate.
    pub insecure: bool,
}

impl TlsSettings {
    pub fn from_env() -> TlsSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        TlsSettings {
            ca_files: ["SSL_CERT_FILE", "MLFLOW_TRACKING_SERVER_CERT_PATH"]
                .iter()
                .filter_map(|k| var(k).map(std::path::PathBuf::from))
                .collect(),
            insecure: var("MLFLOW_TRACKING_INSECURE_TLS")
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")),
        }
    }

    fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        for f in &self.ca_files {
            let pem = std::fs::read(f).map_err(|e| {
                ClientError::Invalid(format!("cannot read CA file {}: {e}", f.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Invalid(format!(
                    "{} is not a PEM certificate bundle: {e}",
                    f.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Invalid(format!(
                    "{} has no PEM certificates",
                    f.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b)
    }
}

/// Credentials, as the Python client takes them from the environment.
#[derive(Clone)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

impl Credentials {
    /// `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD`.
    pub fn from_env() -> Option<Credentials> {
        if let Ok(t) = std::env::var("MLFLOW_TRACKING_TOKEN") {
            if !t.is_empty() {
                return Some(Credentials::Bearer(t));
            }
        }
        match (
            std::env::var("MLFLOW_TRACKING_USERNAME"),
            std::env::var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Ok(username), Ok(password)) if !username.is_empty() => {
                Some(Credentials::Basic { username, password })
            }
            _ => None,
        }
    }
}

/// A model version as the registry returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub current_stage: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The parts of a run the callers need.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
}

/// What a `models:/` URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Alias { name: String, alias: String },
    Version { name: String, version: String },
    Stage { name: String, stage: String },
}

impl ModelRef {
    /// Parses `models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/NAME/STAGE`.
    pub fn parse(uri: &str) -> Result<ModelRef> {
        let rest = uri
            .strip_prefix("models:/")
            .ok_or_else(|| ClientError::Invalid(format!("'{uri}' is not a models:/ URI")))?;
        if let Some((name, alias)) = rest.split_once('@') {
            if name.is_empty() || alias.is_empty() || alias.contains('/') {
                return Err(ClientError::Invalid(format!(
                    "'{uri}': expected models:/NAME@ALIAS"
                )));
            }
            return Ok(ModelRef::Alias {
                name: name.into(),
                alias: alias.into(),
            });
        }
        match rest.split_once('/') {
            Some((name, v)) if !name.is_empty() && !v.is_empty() && !v.contains('/') => {
                if v.chars().all(|c| c.is_ascii_digit()) {
                    Ok(ModelRef::Version {
                        name: name.into(),
                        version: v.into(),
                    })
                } else {
                    Ok(ModelRef::Stage {
                        name: name.into(),
                        stage: v.into(),
                    })
                }
            }
            _ => Err(ClientError::Invalid(format!(
                "'{uri}': expected models:/NAME@ALIAS or models:/NAME/VERSION"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    base: url::Url,
    http: reqwest::Client,
    credentials: Option<Credentials>,
}

impl Client {
    /// A client of the server at `tracking_uri` (e.g. `http://localhost:5000`), checking
    /// certificates as [`TlsSettings::from_env`] says.
    pub fn new(tracking_uri: &str, credentials: Option<Credentials>) -> Result<Client> {
        Client::with_tls(tracking_uri, credentials, &TlsSettings::from_env())
    }

    /// How long a request may wait for the next bytes from the server by default (a stalled
    /// server fails the call instead of holding it forever; a large download that keeps
    /// arriving is never cut).
    pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    /// A client with the given certificate settings.
    pub fn with_tls(
        tracking_uri: &str,
        credentials: Option<Credentials>,
        tls: &TlsSettings,
    ) -> Result<Client> {
        Client::with_options(tracking_uri, credentials, tls, Client::DEFAULT_READ_TIMEOUT)
    }

    /// A client with the given certificate settings and read timeout.
    pub fn with_options(
        tracking_uri: &str,
        credentials: Option<Credentials>,
        tls: &TlsSettings,
        read_timeout: std::time::Duration,
    ) -> Result<Client> {
        let mut base = url::Url::parse(tracking_uri).map_err(|e| {
            ClientError::Invalid(format!("invalid tracking URI '{tracking_uri}': {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Invalid(format!(
                "tracking URI '{tracking_uri}' must be http(s)"
            )));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = tls
            .apply(
                reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .read_timeout(read_timeout),
            )?
            .build()?;
        Ok(Client {
            base,
            http,
            credentials,
        })
    }

    /// A client with credentials from the MLflow environment variables.
    pub fn from_env(tracking_uri: &str) -> Result<Client> {
        Client::new(tracking_uri, Credentials::from_env())
    }

    /// Like [`Client::from_env`], with a read timeout.
    pub fn from_env_with_timeout(
        tracking_uri: &str,
        read_timeout: std::time::Duration,
    ) -> Result<Client> {
        Client::with_options(
            tracking_uri,
            Credentials::from_env(),
            &TlsSettings::from_env(),
            read_timeout,
        )
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.credentials {
            Some(Credentials::Basic { username, password }) => {
                rb.basic_auth(username, Some(password))
            }
            Some(Credentials::Bearer(t)) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(ClientError::Api {
            status: status.as_u16(),
            code: v["error_code"].as_str().unwrap_or("UNKNOWN").to_string(),
            message: v["message"]
                .as_str()
                .map_or_else(|| text.chars().take(300).collect(), String::from),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        body: Option<Value>,
        query: &[(&str, &str)],
    ) -> Result<Value> {
        let url = self.url(&format!("api/2.0/mlflow/{endpoint}"))?;
        let mut rb = self.request(method, url).query(query);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = Self::check(rb.send().await?).await?;
        Ok(resp.json::<Value>().await?)
    }

    async fn post(&self, endpoint: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, endpoint, Some(body), &[])
            .await
    }

    async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value> {
        self.call(reqwest::Method::GET, endpoint, None, query).await
    }

    /// The id of the experiment `name`, created if missing.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => Ok(v["experiment"]["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                let v = self
                    .post("experiments/create", json!({"name": name}))
                    .await?;
                Ok(v["experiment_id"].as_str().unwrap_or_default().to_string())
            }
            Err(e) => Err(e),
        }
    }

    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        tags: &[(String, String)],
    ) -> Result<RunInfo> {
        let now = now_ms();
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let v = self.post("runs/create", json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": now, "tags": tags})).await?;
        let info = &v["run"]["info"];
        Ok(RunInfo {
            run_id: info["run_id"].as_str().unwrap_or_default().to_string(),
            experiment_id: info["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            artifact_uri: info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Logs params and metrics (value, step) in batches within MLflow's per-request limits.
    pub async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64, i64)],
    ) -> Result<()> {
        let now = now_ms();
        for chunk in params.chunks(100) {
            let p: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post("runs/log-batch", json!({"run_id": run_id, "params": p}))
                .await?;
        }
        for chunk in metrics.chunks(1000) {
            let m: Vec<Value> = chunk
                .iter()
                .map(|(k, v, s)| json!({"key": k, "value": v, "timestamp": now, "step": s}))
                .collect();
            self.post("runs/log-batch", json!({"run_id": run_id, "metrics": m}))
                .await?;
        }
        Ok(())
    }

    pub async fn end_run(&self, run_id: &str, status: &str) -> Result<()> {
        self.post(
            "runs/update",
            json!({"run_id": run_id, "status": status, "end_time": now_ms()}),
        )
        .await?;
        Ok(())
    }

    /// The HTTP URL of an artifact path under an `mlflow-artifacts:/…` URI.
    fn artifact_url(&self, artifact_uri: &str, rel: &str) -> Result<url::Url> {
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .ok_or_else(|| {
                ClientError::Invalid(format!(
                    "unsupported artifact URI '{artifact_uri}' (expected mlflow-artifacts:/…)"
                ))
            })?
            .trim_start_matches('/');
        let mut url = self.url("api/2.0/mlflow-artifacts/artifacts/")?;
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| ClientError::Invalid("bad base URL".into()))?;
            segs.pop_if_empty();
            for s in root
                .split('/')
                .chain(rel.split('/'))
                .filter(|s| !s.is_empty())
            {
                segs.push(s);
            }
        }
        Ok(url)
    }

    /// Streams one local file to `<artifact_uri>/<rel>`.
    pub async fn upload_file(&self, artifact_uri: &str, rel: &str, file: &Path) -> Result<()> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Io(format!("{}: {e}", file.display())))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let url = self.artifact_url(artifact_uri, rel)?;
        Self::check(
            self.request(reqwest::Method::PUT, url)
                .body(body)
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// Uploads a directory tree under `<artifact_uri>/<prefix>`.
    pub async fn upload_dir(&self, artifact_uri: &str, prefix: &str, dir: &Path) -> Result<usize> {
        let mut count = 0;
        let mut stack = vec![(dir.to_path_buf(), prefix.trim_matches('/').to_string())];
        while let Some((d, p)) = stack.pop() {
            let mut rd = tokio::fs::read_dir(&d)
                .await
                .map_err(|e| ClientError::Io(format!("{}: {e}", d.display())))?;
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?
            {
                let name = entry.file_name().to_string_lossy().to_string();
                let rel = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                let ft = entry
                    .file_type()
                    .await
                    .map_err(|e| ClientError::Io(e.to_string()))?;
                if ft.is_dir() {
                    stack.push((entry.path(), rel));
                } else if ft.is_file() {
                    self.upload_file(artifact_uri, &rel, &entry.path()).await?;
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Downloads everything under an artifact URI into `dest` (streamed to disk).
    pub async fn download_artifacts(&self, artifact_uri: &str, dest: &Path) -> Result<usize> {
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .ok_or_else(|| {
                ClientError::Invalid(format!("unsupported artifact URI '{artifact_uri}'"))
            })?
            .trim_start_matches('/')
            .to_string();
        let mut count = 0;
        let mut stack = vec![String::new()];
        while let Some(sub) = stack.pop() {
            let path = if sub.is_empty() {
                root.clone()
            } else {
                format!("{root}/{sub}")
            };
            let url = self.url("api/2.0/mlflow-artifacts/artifacts")?;
            let v: Value = Self::check(
                self.request(reqwest::Method::GET, url)
                    .query(&[("path", path.as_str())])
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            for f in v["files"].as_array().cloned().unwrap_or_default() {
                let name = f["path"].as_str().unwrap_or_default();
                // The server is not trusted with where files land.
                if name.is_empty()
                    || name.contains("..")
                    || name.starts_with('/')
                    || name.contains('\\')
                {
                    return Err(ClientError::Invalid(format!(
                        "refusing artifact name '{name}'"
                    )));
                }
                let rel = if sub.is_empty() {
                    name.to_string()
                } else {
                    format!("{sub}/{name}")
                };
                if f["is_dir"].as_bool().unwrap_or(false) {
                    stack.push(rel);
                } else {
                    let target = dest.join(&rel);
                    if let Some(parent) = target.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| ClientError::Io(e.to_string()))?;
                    }
                    let url = self.artifact_url(artifact_uri, &rel)?;
                    let resp =
                        Self::check(self.request(reqwest::Method::GET, url).send().await?).await?;
                    let mut file = tokio::fs::File::create(&target)
                        .await
                        .map_err(|e| ClientError::Io(format!("{}: {e}", target.display())))?;
                    let mut stream = resp.bytes_stream();
                    while let Some(chunk) = stream.next().await {
                        file.write_all(&chunk?)
                            .await
                            .map_err(|e| ClientError::Io(e.to_string()))?;
                    }
                    file.flush()
                        .await
                        .map_err(|e| ClientError::Io(e.to_string()))?;
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Creates a registered model; an existing one is fine.
    pub async fn ensure_registered_model(&self, name: &str) -> Result<()> {
        match self
            .post("registered-models/create", json!({"name": name}))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Registers `source` as a new version of `name`, with `tags` set in the same request.
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[(String, String)],
    ) -> Result<ModelVersion> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let v = self
            .post(
                "model-versions/create",
                json!({"name": name, "source": source, "run_id": run_id, "tags": tags}),
            )
            .await?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// The versions matching an MLflow filter (first page, up to 1,000), newest first.
    pub async fn search_model_versions(&self, filter: &str) -> Result<Vec<ModelVersion>> {
        let v = self
            .get(
                "model-versions/search",
                &[("filter", filter), ("max_results", "1000")],
            )
            .await?;
        let versions = v["model_versions"].clone();
        if versions.is_null() {
            return Ok(Vec::new());
        }
        serde_json::from_value(versions).map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// A run's ids and artifact location.
    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo> {
        let v = self.get("runs/get", &[("run_id", run_id)]).await?;
        let info = &v["run"]["info"];
        let field = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        Ok(RunInfo {
            run_id: field("run_id"),
            experiment_id: field("experiment_id"),
            artifact_uri: field("artifact_uri"),
        })
    }

    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.post(
            "registered-models/alias",
            json!({"name": name, "alias": alias, "version": version}),
        )
        .await?;
        Ok(())
    }

    /// Subscribes `url` to alias moves (MLflow 3's webhooks), signed with `secret`; the
    /// webhook's id.
    pub async fn create_alias_webhook(
        &self,
        name: &str,
        url: &str,
        secret: &str,
    ) -> Result<String> {
        let v = self
            .post(
                "webhooks",
                json!({
                    "name": name,
                    "url": url,
                    "secret": secret,
                    "events": [
                        {"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"},
                        {"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"},
                    ],
                }),
            )
            .await?;
        v["webhook"]["webhook_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| ClientError::Invalid("no webhook_id in the answer".into()))
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("webhooks/{id}"),
            None,
            &[],
        )
        .await?;
        Ok(())
    }

    pub async fn get_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let v = self
            .get(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    pub async fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let v = self
            .get(
                "model-versions/get",
                &[("name", name), ("version", version)],
            )
            .await?;
        serde_json::from_value(v["model_version"].clone())
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    pub async fn get_download_uri(&self, name: &str, version: &str) -> Result<String> {
        let v = self
            .get(
                "model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(v["artifact_uri"].as_str().unwrap_or_default().to_string())
    }

    /// The version a `models:/` reference points at now.
    pub async fn resolve(&self, r: &ModelRef) -> Result<ModelVersion> {
        match r {
            ModelRef::Alias { name, alias } => self.get_version_by_alias(name, alias).await,
            ModelRef::Version { name, version } => self.get_model_version(name, version).await,
            ModelRef::Stage { name, stage } => {
                let v = self
                    .post(
                        "registered-models/get-latest-versions",
                        json!({"name": name, "stages": [stage]}),
                    )
                    .await?;
                let first = v["model_versions"]
                    .as_array()
                    .and_then(|a| a.first())
                    .cloned();
                let first = first.ok_or_else(|| {
                    ClientError::Invalid(format!("model '{name}' has no version in stage {stage}"))
                })?;
                serde_json::from_value(first).map_err(|e| ClientError::Invalid(e.to_string()))
            }
        }
    }

    /// Resolves `models:/…` and downloads the version's files into `dest/<name>/<version>`.
    pub async fn download_model(&self, uri: &str, dest: &Path) -> Result<(ModelVersion, PathBuf)> {
        let r = ModelRef::parse(uri)?;
        let mv = self.resolve(&r).await?;
        let artifact_uri = self.get_download_uri(&mv.name, &mv.version).await?;
        let dir = dest.join(sanitize(&mv.name)).join(&mv.version);
        let n = self.download_artifacts(&artifact_uri, &dir).await?;
        if n == 0 {
            return Err(ClientError::Invalid(format!(
                "model {} version {} has no files at {artifact_uri}",
                mv.name, mv.version
            )));
        }
        Ok((mv, dir))
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_uris() {
        assert_eq!(
            ModelRef::parse("models:/loan-default@champion").unwrap(),
            ModelRef::Alias {
                name: "loan-default".into(),
                alias: "champion".into()
            }
        );
        assert_eq!(
            ModelRef::parse("models:/m/3").unwrap(),
            ModelRef::Version {
                name: "m".into(),
                version: "3".into()
            }
        );
        assert_eq!(
            ModelRef::parse("models:/m/Production").unwrap(),
            ModelRef::Stage {
                name: "m".into(),
                stage: "Production".into()
            }
        );
        for bad in [
            "runs:/x/model",
            "models:/",
            "models:/m",
            "models:/@a",
            "models:/m/1/extra",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_urls_encode_each_segment() {
        let c = Client::new("http://localhost:5000/prefix", None).unwrap();
        let u = c
            .artifact_url("mlflow-artifacts:/1/abc/artifacts", "model/a b.json")
            .unwrap();
        assert_eq!(u.as_str(), "http://localhost:5000/prefix/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model/a%20b.json");
        assert!(c.artifact_url("file:///etc", "x").is_err());
        assert!(format!("{:?}", Credentials::Bearer("secret".into())).contains("***"));
    }
}
