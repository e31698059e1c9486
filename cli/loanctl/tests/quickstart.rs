//! `loanctl quickstart` as a user runs it: the real binary, its printed URLs and examples, a
//! single score, a batch job on the in-process queue, Ctrl-C, and a second run that reuses the
//! data folder instead of training again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts quickstart on free ports; returns the child, the API URL and the stderr lines so far.
fn start(dir: &std::path::Path) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loanctl"))
        .args(["quickstart", "--registry-port", "0", "--api-port", "0"])
        .args(["--trees", "20", "--data-dir"])
        .arg(dir)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx_err.send(line);
        }
    });
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            assert!(
                child.try_wait().unwrap().is_none(),
                "quickstart exited: {seen:#?}"
            );
            continue;
        };
        seen.push(line.clone());
        if line.contains("Ctrl-C stops everything") {
            let url = seen
                .iter()
                .find_map(|l| l.trim().strip_prefix("API"))
                .expect("the API's URL is printed")
                .trim()
                .to_string();
            let (tx2, rx2) = mpsc::channel();
            for l in seen {
                tx2.send(l).unwrap();
            }
            std::thread::spawn(move || {
                while let Ok(l) = rx.recv() {
                    if tx2.send(l).is_err() {
                        break;
                    }
                }
            });
            return (child, url, rx2);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("quickstart did not print its URLs: {seen:#?}");
}

/// Kills the child if a test fails before stopping it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stop(mut guard: Guard) {
    let mut child = guard.0.take().expect("running");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "Ctrl-C ends quickstart cleanly: {s}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("quickstart did not stop within 30 s of Ctrl-C");
}

#[test]
fn quickstart_runs_everything_in_one_process_and_reuses_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (child, api, lines) = start(dir.path());
    let child = Guard(Some(child));
    let printed: Vec<String> = lines.try_iter().collect();
    assert!(
        printed
            .iter()
            .any(|l| l.contains("training the first model")),
        "{printed:#?}"
    );
    // The printed single-score example works as printed.
    let example = printed
        .iter()
        .find(|l| l.trim_start().starts_with("-d '"))
        .expect("a curl example with an application");
    let body = example
        .trim()
        .trim_start_matches("-d '")
        .trim_end_matches('\'');
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{api}/v1/predict"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["default_probability"].as_f64().is_some(), "{v}");
    assert_eq!(v["model"]["name"], "loan-default", "{v}");
    // The decision is recorded in the data folder's audit log and reads back.
    let rid = v["request_id"].as_str().unwrap();
    let mut recorded = serde_json::Value::Null;
    for _ in 0..50 {
        let r = http
            .get(format!("{api}/v1/decisions/{rid}"))
            .send()
            .unwrap();
        if r.status() == 200 {
            recorded = r.json().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        recorded["records"][0]["probability"], v["default_probability"],
        "{recorded}"
    );
    assert!(dir.path().join("audit.db").exists());
    // A clean first start is quiet: the registry's 404s before the first registration, the
    // API's 503s before its first model, are expected steps and logged below WARN.
    let mut first_start = printed.clone();
    first_start.extend(lines.try_iter());
    let alarms: Vec<&String> = first_start
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(alarms.is_empty(), "a clean first start warned: {alarms:#?}");
    // The in-process services log (warnings and up by default), but never applicant data.
    let r = http
        .post(format!("{api}/v1/predict"))
        .header("content-type", "application/json")
        .body(r#"{"purpose": "applicant-secret-7731"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let mut logged = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        let done = l.contains("422") || l.contains("invalid");
        logged.push(l);
        if done {
            break;
        }
    }
    assert!(
        logged.iter().any(|l| l.contains("WARN")),
        "the refused request is logged: {logged:#?}"
    );
    assert!(
        !logged.iter().any(|l| l.contains("applicant-secret-7731")),
        "{logged:#?}"
    );

    // A batch job on the in-process queue, with the bundled data.
    let data = std::fs::read(dir.path().join("german_credit.csv")).unwrap();
    let r = http
        .post(format!("{api}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .body(data)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let mut state = serde_json::Value::Null;
    for _ in 0..300 {
        state = http
            .get(format!("{api}{location}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if state["state"] == "succeeded" || state["state"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state["state"], "succeeded", "{state}");
    assert_eq!(state["rows_scored"], 1000, "{state}");
    stop(child);

    // Again: the same folder, the registered model is found, nothing is trained.
    let (child, api, lines) = start(dir.path());
    let child = Guard(Some(child));
    let printed: Vec<String> = lines.try_iter().collect();
    assert!(
        printed.iter().any(|l| l.contains("not training again")),
        "{printed:#?}"
    );
    let r = http.get(format!("{api}/readyz")).send().unwrap();
    assert_eq!(r.status(), 200);
    stop(child);
}
