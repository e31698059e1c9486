use clap::Parser;
use model_registry::{Application, Settings};
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub dir: std::path::PathBuf,
    /// The application's database, for tests that write to it as another program would.
    pub db_url: String,
}

/// Starts the real application on a free port with its own database and artifact root.
pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// Starts the application with authentication on: `alice` (password `wonderland`, MANAGE),
/// `editor` (`ed-pass`, EDIT), `reader` (`rd-pass`, the default READ), the bearer token
/// `tok-abc` of user `ci` (MANAGE) and `tok-read` of user `viewer` (READ).
pub async fn spawn_app_with_auth(db: Db) -> TestApp {
    spawn_app_with(
        db,
        &[
            "--auth-users-file",
            "{dir}/auth-users",
            "--auth-tokens-file",
            "{dir}/auth-tokens",
            "--auth-permissions-file",
            "{dir}/auth-permissions",
        ],
    )
    .await
}

/// The users file of [`spawn_app_with_auth`]: argon2id strings, as `hash-password` prints.
fn users_file() -> &'static str {
    static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        [
            ("alice", "wonderland"),
            ("editor", "ed-pass"),
            ("reader", "rd-pass"),
        ]
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", model_registry::auth::hash_password(p).unwrap()))
        .collect()
    })
}

/// Like [`spawn_app`], with extra command-line flags (`{dir}` is replaced by the test's folder).
pub async fn spawn_app_with(db: Db, extra: &[&str]) -> TestApp {
    telemetry::init_for_tests();
    let dir = std::env::temp_dir().join(format!("registry-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = match db {
        Db::Sqlite => model_registry::store::sqlite_url(&dir.join("registry.db")),
        Db::Postgres => test_support::fresh_postgres("registry_test").await,
    };
    // The auth files spawn_app_with_auth names (harmless when unused).
    std::fs::write(dir.join("auth-users"), users_file()).unwrap();
    std::fs::write(dir.join("auth-tokens"), "ci:tok-abc\nviewer:tok-read\n").unwrap();
    std::fs::write(
        dir.join("auth-permissions"),
        "alice:MANAGE\nci:MANAGE\neditor:EDIT\n",
    )
    .unwrap();
    let extra: Vec<String> = extra
        .iter()
        .map(|a| a.replace("{dir}", dir.to_str().unwrap()))
        .collect();
    let settings = Settings::try_parse_from(
        [
            "model-registry",
            "--port",
            "0",
            "--backend-store-uri",
            &url,
            "--artifacts-destination",
            dir.join("artifacts").to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .chain(extra),
    )
    .unwrap();
    let app = Application::build(settings)
        .await
        .expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        dir,
        db_url: url,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .post(self.url(&format!("/api/2.0/mlflow{path}")))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        Self::json(
            self.client
                .get(self.url(&format!("/api/2.0/mlflow{path}")))
                .query(query)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let resp = self
            .client
            .request(method, self.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }

    pub async fn create_experiment(&self, name: &str) -> String {
        let (s, v) = self
            .post("/experiments/create", serde_json::json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["experiment_id"].as_str().unwrap().to_string()
    }

    /// A registered model `name` with versions 1..=n, each from a run of experiment `e`.
    pub async fn model_with_versions(&self, name: &str, n: usize) {
        let (s, v) = self
            .post(
                "/registered-models/create",
                serde_json::json!({"name": name}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let exp = self.create_experiment("e").await;
        let run = self.create_run(&exp).await;
        for _ in 0..n {
            let (s, v) = self
                .post(
                    "/model-versions/create",
                    serde_json::json!({"name": name, "source": format!("runs:/{run}/model"), "run_id": run}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    }

    pub async fn create_run(&self, experiment_id: &str) -> String {
        let (s, v) = self
            .post(
                "/runs/create",
                serde_json::json!({"experiment_id": experiment_id}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["run"]["info"]["run_id"].as_str().unwrap().to_string()
    }
}

/// Runs an async test body against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                $body($crate::helpers::Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                $body($crate::helpers::Db::Postgres).await
            }
        }
    };
}
