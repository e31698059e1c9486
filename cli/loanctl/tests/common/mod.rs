//! A registry in process and `loanctl train --registry` against it, for the tests that need both.

use std::path::Path;

use assert_cmd::Command;
use clap::Parser;

/// Starts the registry (embedded SQLite under `dir`) on a free port; returns its URL.
pub async fn registry(dir: &Path) -> String {
    let settings = model_registry::Settings::try_parse_from([
        "model-registry",
        "--port",
        "0",
        "--data-dir",
        dir.join("registry").to_str().unwrap(),
    ])
    .unwrap();
    let app = model_registry::Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    url
}

/// `loanctl train` on the bundled data into `out`, logged to the registry as a new version of
/// loan-default (and the alias moved to it when given). Panics with loanctl's stderr on failure.
pub async fn train(url: &str, out: &Path, trees: usize, alias: Option<&str>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (url, out, alias) = (
        url.to_string(),
        out.to_path_buf(),
        alias.map(str::to_string),
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::cargo_bin("loanctl").unwrap();
        cmd.args(["train", "--trees", &trees.to_string()])
            .args(["--register-as", "loan-default"]);
        if let Some(a) = alias {
            cmd.args(["--alias", &a]);
        }
        cmd.args(["--registry", &url, "--data"])
            .arg(repo.join("data/german_credit.csv"))
            .arg("--spec")
            .arg(repo.join("data/german_credit.spec.json"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}
