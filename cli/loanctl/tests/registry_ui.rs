//! The registry's web UI over real training runs: two `loanctl train --registry` runs, then every
//! page read the way a browser reads it, checked against what the REST API says.

mod common;

use serde_json::Value;

struct Registry {
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    Registry {
        url: common::registry(dir.path()).await,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    }
}

async fn train(url: &str, out: &std::path::Path, alias: Option<&str>) {
    common::train(url, out, 40, alias).await;
}

impl Registry {
    async fn page(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        resp.text().await.unwrap()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.http
            .get(format!("{}/api/2.0/mlflow{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The position of each needle in `haystack`, in the order given (panics if one is missing).
fn positions(haystack: &str, needles: &[&str]) -> Vec<usize> {
    needles
        .iter()
        .map(|n| {
            haystack
                .find(n)
                .unwrap_or_else(|| panic!("{n} not found in {haystack}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_real_training_runs() {
    let reg = registry().await;
    let work = tempfile::tempdir().unwrap();
    train(&reg.url, &work.path().join("first"), Some("champion")).await;
    train(&reg.url, &work.path().join("second"), None).await;

    // What the REST API says about the runs.
    let exp = reg
        .api(
            "/experiments/get-by-name",
            &[("experiment_name", "loan-default")],
        )
        .await;
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v1 = reg
        .api(
            "/model-versions/get",
            &[("name", "loan-default"), ("version", "1")],
        )
        .await;
    let run1 = v1["model_version"]["run_id"].as_str().unwrap().to_string();
    let run = reg.api("/runs/get", &[("run_id", &run1)]).await;
    let metric = |key: &str| {
        run["run"]["data"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == key)
            .unwrap_or_else(|| panic!("{key} logged"))["value"]
            .as_f64()
            .unwrap()
    };
    let auc = metric("test_roc_auc");

    // Experiments list, then the runs table with both runs and the metric columns.
    let html = reg.page("/").await;
    assert!(
        html.contains(&format!("href=\"/experiments/{exp_id}\"")),
        "{html}"
    );
    assert!(html.contains(">loan-default<"), "{html}");
    let html = reg.page(&format!("/experiments/{exp_id}")).await;
    for needle in ["train-first", "train-second", "test_roc_auc", "test_brier"] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    let shown = format!("{auc:.6}");
    assert!(
        html.contains(shown.trim_end_matches('0')),
        "AUC {shown} shown: {html}"
    );
    // Sorting by run name, both ways.
    let asc = reg
        .page(&format!("/experiments/{exp_id}?sort=run_name&desc=0"))
        .await;
    let p = positions(&asc, &[">train-first<", ">train-second<"]);
    assert!(p[0] < p[1]);
    let desc = reg
        .page(&format!("/experiments/{exp_id}?sort=run_name&desc=1"))
        .await;
    let p = positions(&desc, &[">train-first<", ">train-second<"]);
    assert!(p[0] > p[1]);
    // Chosen columns only.
    let param = run["run"]["data"]["params"][0]["key"].as_str().unwrap();
    let cols = reg
        .page(&format!(
            "/experiments/{exp_id}?cols=1&col=metrics.test_ks&col=params.{param}"
        ))
        .await;
    assert!(cols.contains(&format!("{param} (param)")), "{cols}");
    assert!(
        cols.contains(">test_ks") && !cols.contains(">test_brier"),
        "{cols}"
    );
    // A filter in MLflow's syntax narrows the table; a bad one is explained.
    let none = reg
        .page(&format!(
            "/experiments/{exp_id}?filter=metrics.test_roc_auc+%3E+2"
        ))
        .await;
    assert!(none.contains("No runs."), "{none}");
    let bad = reg
        .page(&format!("/experiments/{exp_id}?filter=nonsense+%3D%3D"))
        .await;
    assert!(bad.contains("The filter was not applied"), "{bad}");

    // The run: params, metrics with charts of their history, tags, version, artifacts.
    let html = reg.page(&format!("/runs/{run1}")).await;
    for needle in [
        "train-first",
        "test_roc_auc",
        "curve_test_log_loss",
        "mlflow.source.name",
        "Registered as",
        "@champion",
        "report.md",
        "roc.png",
        "calibration.png",
        "model/",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    let history = reg
        .api(
            "/metrics/get-history",
            &[("run_id", &run1), ("metric_key", "curve_test_log_loss")],
        )
        .await;
    let points = history["metrics"].as_array().unwrap().len();
    assert!(points >= 20, "a learning curve is logged: {points} points");
    assert!(
        html.contains(&format!(
            "curve_test_log_loss: {points} points over steps 2 to 40"
        )),
        "the history is charted: {html}"
    );
    assert_eq!(
        html.matches("<figure class=\"chart\"").count(),
        2,
        "the two learning curves are charted, the single values are not: {html}"
    );
    assert_eq!(html.matches("<polyline").count(), 2, "{html}");

    // The artifact browser: the markdown report with its plots, JSON, a folder, the files.
    let html = reg
        .page(&format!("/runs/{run1}/artifacts?path=report.md"))
        .await;
    assert!(html.contains("<article class=\"markdown\">"), "{html}");
    assert!(html.contains("<h1>Training report</h1>"), "{html}");
    let roc = format!("/runs/{run1}/artifact-file?path=roc.png");
    assert!(html.contains(&format!("src=\"{roc}\"")), "{html}");
    let resp = reg
        .http
        .get(format!("{}{roc}", reg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert!(resp.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let html = reg
        .page(&format!("/runs/{run1}/artifacts?path=report.json"))
        .await;
    assert!(
        html.contains("<pre class=\"text\">") && html.contains("model_uuid"),
        "{html}"
    );
    let html = reg
        .page(&format!("/runs/{run1}/artifacts?path=model"))
        .await;
    assert!(
        html.contains("model.json") && html.contains("MLmodel"),
        "{html}"
    );
    let resp = reg
        .http
        .get(format!(
            "{}/runs/{run1}/artifact-file?path=model/model.json&download=1",
            reg.url
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(
        resp.bytes().await.unwrap().to_vec(),
        std::fs::read(work.path().join("first/model/model.json")).unwrap(),
        "the download is the file, byte for byte"
    );

    // Comparison of the two runs, with a chart per metric.
    let v2 = reg
        .api(
            "/model-versions/get",
            &[("name", "loan-default"), ("version", "2")],
        )
        .await;
    let run2 = v2["model_version"]["run_id"].as_str().unwrap().to_string();
    let html = reg.page(&format!("/compare?run={run1}&run={run2}")).await;
    assert!(html.contains("Comparing 2 runs"), "{html}");
    assert!(html.contains("train-first") && html.contains("train-second"));
    assert!(html.contains("curve_test_roc_auc"), "{html}");

    // Models: the list, and the model with both versions, the alias and the source runs.
    let html = reg.page("/models").await;
    assert!(
        html.contains("loan-default") && html.contains("@champion"),
        "{html}"
    );
    let html = reg.page("/model?name=loan-default").await;
    assert!(html.contains(&format!("href=\"/runs/{run1}\"")), "{html}");
    assert!(html.contains(&format!("href=\"/runs/{run2}\"")), "{html}");
    assert!(html.contains("<tr id=\"v2\">") && html.contains("<tr id=\"v1\">"));
    let html = reg
        .page("/model/confirm?name=loan-default&action=set-alias&alias=champion&version=2")
        .await;
    assert!(html.contains("from version 1 to version"), "{html}");
    // Real runs carry what the promotion page compares: approval rate and the worst adverse
    // impact ratio (German credit has protected attributes), beside AUC, KS and Brier.
    let approval = metric("test_approval_rate");
    let air = metric("test_min_adverse_impact_ratio");
    assert!((0.0..=1.0).contains(&approval), "{approval}");
    assert!(air > 0.0 && air <= 1.0, "{air}");
    let at = html.find("What the move changes").expect("a comparison");
    assert!(html[at..].contains(&format!("{auc:.4}")), "{html}");
    assert!(html[at..].contains(&format!("{air:.3}")), "{html}");
}
