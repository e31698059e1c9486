//! The binary started the way MLflow's documentation starts `mlflow server`, in an empty folder.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary in `dir` with `args` and `env`, waits for /health, and returns it with a
/// thread collecting its log lines.
fn start(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
    port: u16,
) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_model-registry"));
    cmd.current_dir(dir).args(args).stderr(Stdio::piped());
    for var in [
        "DATABASE_URL",
        "ARTIFACT_ROOT",
        "REGISTRY_PORT",
        "REGISTRY_HOST",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    let url = format!("http://127.0.0.1:{port}/health");
    for _ in 0..100 {
        if probe::health_ok(&url) {
            return (child, lines);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the registry did not start: {:?}", lines.join().unwrap());
}

mod probe {
    /// A GET without an async runtime (the test drives a child process).
    pub fn health_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
    }
}

#[tokio::test]
async fn starts_with_mlflow_server_command_lines_and_variables() {
    let dir = std::env::temp_dir().join(format!("registry-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // MLflow's proxied-artifact quickstart, plus flags that have no effect here.
    let port = free_port();
    let (mut child, lines) = start(
        &dir,
        &[
            "--backend-store-uri",
            "sqlite:///mlflow.db",
            "--default-artifact-root",
            "mlflow-artifacts:/",
            "--artifacts-destination",
            "./mlartifacts",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "4",
            "--gunicorn-opts",
            "--timeout 60",
        ],
        &[],
        port,
    );
    assert!(
        dir.join("mlflow.db").is_file(),
        "sqlite:///mlflow.db is relative and created"
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let exp: serde_json::Value = client
        .post(format!("{base}/api/2.0/mlflow/experiments/create"))
        .json(&serde_json::json!({"name": "cli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = exp["experiment_id"].as_str().unwrap().to_string();
    let got: serde_json::Value = client
        .get(format!(
            "{base}/api/2.0/mlflow/experiments/get?experiment_id={id}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/{id}")
    );
    let put = client
        .put(format!(
            "{base}/api/2.0/mlflow-artifacts/artifacts/{id}/r/artifacts/a.txt"
        ))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("mlartifacts/{id}/r/artifacts/a.txt"))).unwrap(),
        "hello"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join().unwrap().join("\n");
    assert!(log.contains("--workers has no effect"), "{log}");
    assert!(log.contains("--gunicorn-opts"), "{log}");

    // The same from MLflow's variables, with an absolute SQLite path and a client-side root.
    let port = free_port();
    let abs = dir.join("env").join("mlflow.db");
    let (mut child, _lines) = start(
        &dir,
        &[],
        &[
            (
                "MLFLOW_BACKEND_STORE_URI",
                format!("sqlite:///{}", abs.display()),
            ),
            (
                "MLFLOW_DEFAULT_ARTIFACT_ROOT",
                "file:///shared/mlruns".into(),
            ),
            (
                "MLFLOW_ARTIFACTS_DESTINATION",
                dir.join("dest").display().to_string(),
            ),
            ("MLFLOW_HOST", "127.0.0.1".into()),
            ("MLFLOW_PORT", port.to_string()),
        ],
        port,
    );
    assert!(abs.is_file(), "sqlite:////abs/path is absolute and created");
    let base = format!("http://127.0.0.1:{port}");
    let default: serde_json::Value = client
        .get(format!(
            "{base}/api/2.0/mlflow/experiments/get?experiment_id=0"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        default["experiment"]["artifact_location"],
        "file:///shared/mlruns/0"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
