//! Settings from flags and environment. Accepts `mlflow server`'s flags for what it supports,
//! so scripts that start `mlflow server` can start this instead.

use std::path::PathBuf;

/// MLflow-compatible tracking server and model registry.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "model-registry", version, about)]
pub struct Settings {
    /// Address to bind.
    #[arg(long, env = "REGISTRY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; tests pass 0 to get a free one.
    #[arg(long, env = "REGISTRY_PORT", default_value_t = 5000)]
    pub port: u16,
    /// Database URL: postgres://… for production; sqlite:… or unset for the embedded default
    /// (a SQLite file in the data directory). `--backend-store-uri` is mlflow's name for it.
    #[arg(
        long = "backend-store-uri",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where artifacts are stored (a local directory: the shared volume in Kubernetes).
    /// `--artifacts-destination` and `--default-artifact-root` are mlflow's names for it.
    #[arg(
        long = "artifacts-destination",
        alias = "default-artifact-root",
        env = "ARTIFACT_ROOT"
    )]
    pub artifact_root: Option<PathBuf>,
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

impl Settings {
    /// The database URL to use: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("registry.db").display()
            ),
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
            "--host",
            "0.0.0.0",
            "--port",
            "5001",
            "--backend-store-uri",
            "sqlite:///tmp/x.db",
            "--default-artifact-root",
            "file:///srv/artifacts",
            "--serve-artifacts",
        ])
        .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 5001));
        assert_eq!(s.database_url(), "sqlite:///tmp/x.db");
        assert_eq!(s.artifact_root(), PathBuf::from("/srv/artifacts"));
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
        assert!(s.database_url().starts_with("sqlite:///d/registry.db"));
    }
}
