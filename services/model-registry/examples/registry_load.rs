//! Load generator for the registry (ours or a real `mlflow server`): `log_metric` calls and
//! `search_runs` calls over loopback for a fixed time, reporting requests per second and
//! latency percentiles. It refuses any address that is not loopback.
//!
//! cargo run --release -p model-registry --example registry_load -- http://127.0.0.1:5000 log-metric 10 1

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: registry_load URL log-metric|search-runs SECONDS CONCURRENCY";
    let url = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .trim_end_matches('/')
        .to_string();
    let scenario = args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?.clone();
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let host = url::Url::parse(&url)?
        .host_str()
        .unwrap_or_default()
        .to_string();
    if !["127.0.0.1", "localhost", "[::1]", "::1"].contains(&host.as_str()) {
        anyhow::bail!("refusing to load {host}: loopback addresses only");
    }
    let client = reqwest::Client::new();
    let api = format!("{url}/api/2.0/mlflow");
    let post = |path: &str, body: Value| {
        let client = client.clone();
        let u = format!("{api}{path}");
        async move {
            let r = client.post(u).json(&body).send().await?;
            anyhow::ensure!(
                r.status().is_success(),
                "{} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            anyhow::Ok(r.json::<Value>().await?)
        }
    };
    let name = format!("load-{}", std::process::id());
    let exp = post("/experiments/create", json!({"name": name})).await?["experiment_id"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut runs = Vec::new();
    let setup_runs = if scenario == "search-runs" {
        100
    } else {
        concurrency
    };
    for i in 0..setup_runs {
        let r = post(
            "/runs/create",
            json!({"experiment_id": exp, "start_time": i}),
        )
        .await?;
        let id = r["run"]["info"]["run_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        post("/runs/log-batch", json!({"run_id": id, "params": [{"key": "depth", "value": (i % 5).to_string()}], "metrics": [{"key": "auc", "value": 0.7 + (i as f64) / 1000.0, "timestamp": 1, "step": 0}]})).await?;
        runs.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, api, exp, scenario) =
            (client.clone(), api.clone(), exp.clone(), scenario.clone());
        let run = runs[w % runs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut step = 0i64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let resp = match scenario.as_str() {
                    "log-metric" => {
                        step += 1;
                        client.post(format!("{api}/runs/log-metric")).json(&json!({"run_id": run, "key": "loss", "value": 1.0 / step as f64, "timestamp": step, "step": step})).send().await
                    }
                    _ => client.post(format!("{api}/runs/search")).json(&json!({"experiment_ids": [exp], "filter": "metrics.auc > 0.75 and params.depth = '3'", "max_results": 100})).send().await,
                };
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{scenario} concurrency={concurrency} seconds={seconds}: {} ok, {errors} errors, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
