use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use api::{Application, Settings};
use clap::Parser;
use serde_json::{json, Value};

/// German-credit rows as (spec-ordered strings, JSON application).
pub fn german() -> &'static Vec<(Vec<String>, Value)> {
    static ROWS: OnceLock<Vec<(Vec<String>, Value)>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let spec = test_support::german_spec();
        let (headers, records) = test_support::german_csv();
        records
            .iter()
            .map(|r| {
                let mut obj = serde_json::Map::new();
                let cells: Vec<String> = spec
                    .features
                    .iter()
                    .map(|f| {
                        let c = &r[headers.iter().position(|h| h == f.name).unwrap()];
                        let v = match f.kind {
                            features::FeatureKind::Numeric => json!(c.parse::<f64>().unwrap()),
                            _ => json!(c),
                        };
                        obj.insert(f.name.clone(), v);
                        c.to_string()
                    })
                    .collect();
                (cells, Value::Object(obj))
            })
            .collect()
    })
}

/// Trains a small bundle (seeded) into a fresh directory.
pub fn train_bundle(trees: usize, seed: u64) -> PathBuf {
    test_support::train_german_bundle(&test_support::tmp("api-bundle"), trees, seed)
}

/// One bundle shared by the tests that only need "a model".
pub fn shared_bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| train_bundle(30, 42))
}

pub struct TestApi {
    pub address: String,
    pub client: reqwest::Client,
}

pub async fn spawn_api(args: &[&str]) -> TestApi {
    telemetry::init_for_tests();
    let cache = std::env::temp_dir().join(format!("api-cache-{}", uuid::Uuid::new_v4().simple()));
    let own_cache = args.contains(&"--model-cache-dir");
    let base = ["api", "--port", "0"];
    let cache_args = ["--model-cache-dir", cache.to_str().unwrap()];
    let settings = Settings::try_parse_from(
        base.iter()
            .copied()
            .chain(cache_args.into_iter().filter(|_| !own_cache))
            .chain(args.iter().copied()),
    )
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApi {
        address,
        client: reqwest::Client::new(),
    }
}

impl TestApi {
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the model is loaded (it loads in the background), for up to 10 s.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if self.get("/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the API never became ready");
    }

    /// Waits until /readyz answers 200 with `version`, for up to `secs`.
    pub async fn wait_for_version(&self, version: &str, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            let (s, v) = self.get("/readyz").await;
            if s == 200 && v["model"]["version"] == version {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A real registry on its own database; returns its URL and a handle to stop it.
pub async fn spawn_registry(db: Db) -> (String, actix_web::dev::ServerHandle) {
    spawn_registry_with(db, &[]).await
}

/// Like [`spawn_registry`], with more flags (later flags win).
pub async fn spawn_registry_with(db: Db, extra: &[&str]) -> (String, actix_web::dev::ServerHandle) {
    let dir = std::env::temp_dir().join(format!("api-registry-{}", uuid::Uuid::new_v4().simple()));
    let url = match db {
        Db::Sqlite => model_registry::store::sqlite_url(&dir.join("r.db")),
        Db::Postgres => test_support::fresh_postgres("api_test").await,
    };
    std::fs::create_dir_all(&dir).unwrap();
    let own_root = extra.contains(&"--artifacts-destination");
    let default_root = dir.join("a");
    let defaults = ["--artifacts-destination", default_root.to_str().unwrap()];
    let settings = model_registry::Settings::try_parse_from(
        [
            "model-registry",
            "--port",
            "0",
            "--backend-store-uri",
            &url,
            "--data-dir",
        ]
        .into_iter()
        .chain([dir.to_str().unwrap()])
        .chain(defaults.into_iter().filter(|_| !own_root))
        .chain(extra.iter().copied()),
    )
    .unwrap();
    let app = model_registry::Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (address, handle)
}

/// Registers a bundle as a new version of loan-default and moves `alias` to it.
pub async fn register(registry: &str, bundle: &Path, alias: &str) -> String {
    test_support::register(registry, "loan-default", bundle, alias).await
}

pub async fn set_alias(registry: &str, alias: &str, version: &str) {
    mlflow_client::Client::new(registry, None)
        .unwrap()
        .set_alias("loan-default", alias, version)
        .await
        .unwrap();
}

#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Db::Postgres).await
            }
        }
    };
}

/// The `api` binary serving the shared bundle on a free port, once it is ready; the caller ends
/// it (it is killed when dropped without that).
pub async fn spawn_binary(extra: &[&str]) -> (ChildGuard, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .args([
            "--port",
            &port.to_string(),
            "--model-uri",
            shared_bundle().to_str().unwrap(),
        ])
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = ChildGuard(child);
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (child, port);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the api binary did not become ready");
}

/// A child process killed on drop (a failing test must not leave it running).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The value on the first line of a Prometheus text page that starts with `line_start`.
pub fn metric(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
