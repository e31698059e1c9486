//! Settings from flags and environment. Takes `mlflow server`'s command line and its `MLFLOW_*`
//! variables: what applies here is honoured, the rest is accepted with a one-line notice, so
//! scripts and Helm values written for `mlflow server` start this instead.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches};

/// MLflow-compatible tracking server and model registry.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "model-registry", version, about, disable_help_flag = true)]
pub struct Settings {
    /// Address to bind (`MLFLOW_HOST` too).
    #[arg(short = 'h', long, env = "REGISTRY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; tests pass 0 to get a free one (`MLFLOW_PORT` too).
    #[arg(short = 'p', long, env = "REGISTRY_PORT", default_value_t = 5000)]
    pub port: u16,
    /// Database URL: postgresql://… for production; sqlite:///relative.db or
    /// sqlite:////absolute.db (created if missing); unset for the embedded default (a SQLite file
    /// in the data directory). `MLFLOW_BACKEND_STORE_URI` too.
    #[arg(
        long = "backend-store-uri",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where the artifact proxy keeps files: a local directory (the shared volume in
    /// Kubernetes); `file:///path` is that path. `MLFLOW_ARTIFACTS_DESTINATION` too.
    #[arg(long = "artifacts-destination", env = "ARTIFACT_ROOT")]
    pub artifact_root: Option<PathBuf>,
    /// The artifact location recorded for new experiments, as in MLflow: `mlflow-artifacts:/`
    /// (the default: through this server's proxy) or a store clients use directly
    /// (`file:///shared/mlruns`, `s3://bucket/path`), which this server never reads.
    #[arg(long, env = "MLFLOW_DEFAULT_ARTIFACT_ROOT")]
    pub default_artifact_root: Option<String>,
    /// Folder for the embedded SQLite database and default artifact root.
    #[arg(
        long,
        env = "REGISTRY_DATA_DIR",
        default_value = "loanctl-data/registry"
    )]
    pub data_dir: PathBuf,
    /// Accepted for compatibility with `mlflow server`; artifacts are always served.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub serve_artifacts: bool,
    /// `mlflow server` flags that have no effect here (each is named in a notice at start).
    #[command(flatten)]
    pub ignored: IgnoredMlflowFlags,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
    /// Largest accepted JSON request body, in bytes.
    #[arg(long, env = "REGISTRY_MAX_JSON_BYTES", default_value_t = 16 << 20)]
    pub max_json_bytes: usize,
    /// Largest accepted artifact upload, in bytes.
    #[arg(long, env = "REGISTRY_MAX_ARTIFACT_BYTES", default_value_t = 2 << 30)]
    pub max_artifact_bytes: u64,
    /// Users allowed in with HTTP basic auth: lines `user:<argon2id PHC string>` (from
    /// `loanctl registry hash-password`; legacy `user:sha256:<hex>` and `user:password` still
    /// work, with a warning). With this or the tokens file set, everything needs credentials
    /// but /health, /metrics and the UI's sign-in page and stylesheet.
    #[arg(long, env = "REGISTRY_AUTH_USERS_FILE")]
    pub auth_users_file: Option<PathBuf>,
    /// Bearer tokens allowed in, for `MLFLOW_TRACKING_TOKEN`: lines `user:token`, the token
    /// acting as that user.
    #[arg(long, env = "REGISTRY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Permissions of users: lines `user:READ|EDIT|MANAGE|ADMIN|NO_PERMISSIONS`.
    #[arg(long, env = "REGISTRY_AUTH_PERMISSIONS_FILE")]
    pub auth_permissions_file: Option<PathBuf>,
    /// Permission of users the permissions file does not name (MLflow's `default_permission`).
    #[arg(long, env = "REGISTRY_AUTH_DEFAULT_PERMISSION", default_value = "READ")]
    pub auth_default_permission: crate::auth::Permission,
    /// Seconds to finish in-flight requests on shutdown (keep below the pod's grace period).
    #[arg(long, env = "REGISTRY_SHUTDOWN_TIMEOUT", default_value_t = 20)]
    pub shutdown_timeout: u64,
    /// The API's and workers' JOBS_ROOT (applicants' uploads and results) when it lies inside
    /// the artifact root: nothing under it is ever served, listed or written.
    #[arg(long, env = "JOBS_ROOT")]
    pub jobs_root: Option<PathBuf>,
    /// Comma-separated `Host` values this server answers to (DNS-rebinding protection), as
    /// `mlflow server` has it: names, `*.example.com`, `192.168.*`, `name:port`, or `*` for any.
    /// Default: localhost names, private IPv4 ranges and the bind address. `/health` and
    /// `/metrics` answer whatever the Host.
    #[arg(long, env = "MLFLOW_SERVER_ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,
    /// Comma-separated origins (`https://app.example`) whose web pages may call the REST API
    /// (CORS) and make changes; a state-changing request from any other site is refused.
    #[arg(long, env = "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
}

/// `mlflow server`'s other flags: accepted, so that its launch scripts run unchanged, and
/// reported at start as having no effect here.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IgnoredMlflowFlags {
    /// Ignored: one process serves every request on async threads.
    #[arg(short = 'w', long, env = "MLFLOW_WORKERS", hide_env_values = true)]
    pub workers: Option<String>,
    /// Ignored: there is no gunicorn, uvicorn or waitress here.
    #[arg(long, env = "MLFLOW_GUNICORN_OPTS", allow_hyphen_values = true)]
    pub gunicorn_opts: Option<String>,
    /// Ignored (see --gunicorn-opts).
    #[arg(long, env = "MLFLOW_UVICORN_OPTS", allow_hyphen_values = true)]
    pub uvicorn_opts: Option<String>,
    /// Ignored (see --gunicorn-opts).
    #[arg(long, allow_hyphen_values = true)]
    pub waitress_opts: Option<String>,
    /// Ignored: authentication is set with --auth-users-file and --auth-tokens-file.
    #[arg(long)]
    pub app_name: Option<String>,
    /// Ignored: the UI and API are served at the root.
    #[arg(long, env = "MLFLOW_STATIC_PREFIX")]
    pub static_prefix: Option<String>,
    /// Ignored: /metrics is always served.
    #[arg(long, env = "MLFLOW_EXPOSE_PROMETHEUS")]
    pub expose_prometheus: Option<String>,
    /// Ignored: the one database holds runs and models.
    #[arg(long, env = "MLFLOW_REGISTRY_STORE_URI", hide_env_values = true)]
    pub registry_store_uri: Option<String>,
    /// Ignored: artifacts are always served (the proxy never reads client-side stores).
    #[arg(long)]
    pub no_serve_artifacts: bool,
    /// Ignored: tracking and registry stay on.
    #[arg(long, env = "MLFLOW_ARTIFACTS_ONLY")]
    pub artifacts_only: bool,
    /// Ignored: the UI sends its own frame and content-security headers.
    #[arg(long)]
    pub x_frame_options: Option<String>,
    /// Ignored: the Host and cross-site checks stay on (use --allowed-hosts '*' and
    /// --cors-allowed-origins instead).
    #[arg(long)]
    pub disable_security_middleware: bool,
    /// Ignored: use RUST_LOG for debug logs.
    #[arg(long)]
    pub dev: bool,
}

impl IgnoredMlflowFlags {
    /// One line per flag given that has no effect here.
    pub fn notices(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |given: bool, line: &'static str| {
            if given {
                v.push(line);
            }
        };
        note(
            self.workers.is_some(),
            "--workers has no effect: one process serves every request on async threads",
        );
        note(
            self.gunicorn_opts.is_some() || self.uvicorn_opts.is_some() || self.waitress_opts.is_some(),
            "--gunicorn-opts/--uvicorn-opts/--waitress-opts have no effect: there is no Python web server here",
        );
        note(self.app_name.is_some(), "--app-name has no effect: authentication is set with --auth-users-file and --auth-tokens-file");
        note(
            self.static_prefix.is_some(),
            "--static-prefix has no effect: the UI and API are served at the root",
        );
        note(
            self.expose_prometheus.is_some(),
            "--expose-prometheus has no effect: /metrics is always served",
        );
        note(self.registry_store_uri.is_some(), "--registry-store-uri has no effect: models are kept in the --backend-store-uri database");
        note(
            self.no_serve_artifacts,
            "--no-serve-artifacts has no effect: the artifact proxy is always on",
        );
        note(
            self.artifacts_only,
            "--artifacts-only has no effect: tracking and the registry stay on",
        );
        note(self.x_frame_options.is_some(), "--x-frame-options has no effect: the UI sets its own frame and content-security headers");
        note(self.disable_security_middleware, "--disable-security-middleware has no effect: use --allowed-hosts and --cors-allowed-origins");
        note(
            self.dev,
            "--dev has no effect: set RUST_LOG=debug for debug logs",
        );
        v
    }
}

impl Settings {
    /// Parses the command line, then reads `mlflow server`'s variables (`MLFLOW_HOST`,
    /// `MLFLOW_PORT`, `MLFLOW_BACKEND_STORE_URI`, `MLFLOW_ARTIFACTS_DESTINATION`) for what
    /// neither a flag nor this server's own variable set.
    pub fn parse_with_mlflow_env<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Settings::command().try_get_matches_from(args)?;
        let mut s = Settings::from_arg_matches(&matches)?;
        let unset = |id: &str| {
            matches
                .value_source(id)
                .is_none_or(|v| v == clap::parser::ValueSource::DefaultValue)
        };
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if unset("host") {
            if let Some(v) = var("MLFLOW_HOST") {
                s.host = v;
            }
        }
        if unset("port") {
            if let Some(v) = var("MLFLOW_PORT") {
                s.port = v.parse().map_err(|_| {
                    Settings::command().error(
                        clap::error::ErrorKind::InvalidValue,
                        format!("MLFLOW_PORT={v} is not a port"),
                    )
                })?;
            }
        }
        if unset("database_url") {
            if let Some(v) = var("MLFLOW_BACKEND_STORE_URI") {
                s.database_url = Some(v);
            }
        }
        if unset("artifact_root") {
            if let Some(v) = var("MLFLOW_ARTIFACTS_DESTINATION") {
                s.artifact_root = Some(PathBuf::from(v));
            }
        }
        Ok(s)
    }

    /// The location prefix of new experiments' artifacts (the experiment id is appended):
    /// `mlflow-artifacts:` by default; a local path becomes a `file://` URI, as MLflow does.
    pub fn experiment_artifact_root(&self) -> String {
        match self.default_artifact_root.as_deref().map(str::trim) {
            None | Some("") => "mlflow-artifacts:".to_string(),
            Some(r) if r.starts_with("mlflow-artifacts:") || r.contains("://") => {
                r.trim_end_matches('/').to_string()
            }
            Some(path) => {
                let abs = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
                format!("file://{}", abs.display().to_string().trim_end_matches('/'))
            }
        }
    }

    /// The database URL to use: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => crate::store::sqlite_url(&self.data_dir.join("registry.db")),
        }
    }

    /// The artifact root: the configured one, or `artifacts/` in the data directory. Values
    /// written for `mlflow server` are understood: `file:///path` is that path, and
    /// `mlflow-artifacts:/…` (the proxied default) means the default directory.
    pub fn artifact_root(&self) -> PathBuf {
        let default = || self.data_dir.join("artifacts");
        match self.artifact_root.as_ref().and_then(|p| p.to_str()) {
            None => self.artifact_root.clone().unwrap_or_else(default),
            Some(s) if s.starts_with("mlflow-artifacts:") || s.is_empty() => default(),
            // A PathBuf may already have folded "file:///x" into "file:/x".
            Some(s) => match s.strip_prefix("file:") {
                Some(rest) => PathBuf::from(format!("/{}", rest.trim_start_matches('/'))),
                None => PathBuf::from(s),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn accepts_mlflow_server_flags_and_uri_style_roots() {
        let s = Settings::try_parse_from([
            "model-registry",
            "-h",
            "0.0.0.0",
            "-p",
            "5001",
            "--backend-store-uri",
            "sqlite:///tmp/x.db",
            "--default-artifact-root",
            "file:///srv/mlruns/",
            "--artifacts-destination",
            "file:///srv/artifacts",
            "--serve-artifacts",
            "--workers",
            "4",
            "--gunicorn-opts",
            "--timeout 60",
            "--app-name",
            "basic-auth",
        ])
        .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 5001));
        assert_eq!(s.database_url(), "sqlite:///tmp/x.db");
        assert_eq!(s.artifact_root(), PathBuf::from("/srv/artifacts"));
        assert_eq!(s.experiment_artifact_root(), "file:///srv/mlruns");
        assert_eq!(s.ignored.notices().len(), 3);
        let s = Settings::try_parse_from(["model-registry"]).unwrap();
        assert_eq!(s.experiment_artifact_root(), "mlflow-artifacts:");
        assert!(s.ignored.notices().is_empty());
        let s = Settings::try_parse_from([
            "model-registry",
            "--artifacts-destination",
            "mlflow-artifacts:/",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        assert_eq!(s.artifact_root(), PathBuf::from("/d/artifacts"));
        let s = Settings::try_parse_from(["model-registry", "--data-dir", "/d"]).unwrap();
        assert_eq!(s.database_url(), "sqlite:////d/registry.db");
    }
}
