//! `loanctl replay`: re-scores recorded decisions with the exact model that made them and
//! reports whether probability (bit for bit), decision and reasons are the same.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use model::{Bundle, ReasonPolicy, Scorer};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The audit store the API and workers write (`AUDIT_URL`): `postgres://…` or `sqlite:path`.
    #[arg(long, env = "AUDIT_URL")]
    pub audit_url: String,
    /// The model registry the recorded versions are downloaded from.
    #[arg(long = "registry", env = "MLFLOW_TRACKING_URI")]
    pub registry: Option<String>,
    /// A local bundle (folder, `model.json` or training output) to use for the decisions it made
    /// (matched by SHA-256): models served from a local `MODEL_URI`. May be given again.
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Decisions recorded at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Decisions recorded before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this request's decisions (a batch job's id for its rows).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Print the summary as JSON: {"replayed", "identical", "different": [...]}.
    #[arg(long)]
    pub json: bool,
}

fn millis(t: &str) -> Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("'{t}' is not an RFC 3339 time (2026-12-01T00:00:00Z)"))?
        .timestamp_millis())
}

/// A recorded model, loaded (or why it cannot be).
type Loaded = std::result::Result<std::sync::Arc<Scorer>, String>;

struct Models {
    local: HashMap<String, std::sync::Arc<Scorer>>,
    registry: Option<mlflow_client::Client>,
    fetched: HashMap<(String, String, String), Loaded>,
}

impl Models {
    async fn get(&mut self, r: &audit::Record) -> Loaded {
        if let Some(s) = self.local.get(&r.bundle_sha256) {
            return Ok(s.clone());
        }
        let key = (
            r.model_name.clone(),
            r.model_version.clone(),
            r.bundle_sha256.clone(),
        );
        if let Some(l) = self.fetched.get(&key) {
            return l.clone();
        }
        let loaded = self.fetch(r).await;
        self.fetched.insert(key, loaded.clone());
        loaded
    }

    async fn fetch(&self, r: &audit::Record) -> Loaded {
        let Some(client) = &self.registry else {
            return Err(format!(
                "{} version {} is not among --model and no registry is given (--registry)",
                r.model_name, r.model_version
            ));
        };
        let dir =
            std::env::temp_dir().join(format!("loanctl-replay-{}", uuid_like(&r.bundle_sha256)));
        let result = async {
            let uri = client
                .get_download_uri(&r.model_name, &r.model_version)
                .await
                .map_err(|e| format!("{} version {}: {e}", r.model_name, r.model_version))?;
            client
                .download_artifacts(&uri, &dir)
                .await
                .map_err(|e| format!("cannot download {} version {}: {e}", r.model_name, r.model_version))?;
            let (bundle, sha) = Bundle::load_with_digest(&dir).map_err(|e| e.to_string())?;
            if sha != r.bundle_sha256 {
                return Err(format!(
                    "{} version {} in the registry is not the bundle that decided (SHA-256 {sha}, recorded {})",
                    r.model_name, r.model_version, r.bundle_sha256
                ));
            }
            Scorer::new(bundle)
                .map(std::sync::Arc::new)
                .map_err(|e| e.to_string())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// A folder name from a digest (hex only; never a path).
fn uuid_like(sha: &str) -> String {
    let hex: String = sha
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    format!("{hex}-{}", std::process::id())
}

/// Re-scores one record: `None` when identical, else what differs.
fn compare(scorer: &Scorer, r: &audit::Record) -> Option<Value> {
    let features: Value = match serde_json::from_str(&r.features) {
        Ok(v) => v,
        Err(e) => {
            return Some(json!({"error": format!("the recorded features are not JSON: {e}")}))
        }
    };
    let spec = &scorer.bundle().spec;
    let raws = match audit::raws_from_json(spec, &features) {
        Ok(r) => r,
        Err(e) => return Some(json!({"error": e})),
    };
    let s = match scorer.score(&raws, true) {
        Ok(s) => s,
        Err(e) => {
            return Some(json!({"error": format!("the recorded features no longer score: {e}")}))
        }
    };
    let policy = ReasonPolicy::parse(&r.reason_policy).unwrap_or(ReasonPolicy::All);
    let reasons = if policy.explains(s.decision) {
        serde_json::to_value(&s.reasons).unwrap_or(Value::Null)
    } else {
        json!([])
    };
    let recorded_reasons: Value = serde_json::from_str(&r.reasons).unwrap_or(Value::Null);
    let mut what = Vec::new();
    if s.default_probability.to_bits() != r.probability.to_bits() {
        what.push("probability");
    }
    if s.decision.as_str() != r.decision {
        what.push("decision");
    }
    if reasons != recorded_reasons {
        what.push("reasons");
    }
    if what.is_empty() {
        return None;
    }
    Some(json!({
        "what": what,
        "recorded": {"probability": r.probability, "decision": r.decision, "reasons": recorded_reasons},
        "replayed": {"probability": s.default_probability, "decision": s.decision.as_str(), "reasons": reasons},
    }))
}

pub fn run(a: Args) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(replay(a))
}

async fn replay(a: Args) -> Result<()> {
    let store = audit::Store::connect(&a.audit_url)
        .await
        .context("cannot open the audit store (--audit-url)")?;
    let mut local = HashMap::new();
    for m in &a.models {
        let (bundle, sha) =
            Bundle::load_with_digest(m).with_context(|| format!("{}", m.display()))?;
        local.insert(sha, std::sync::Arc::new(Scorer::new(bundle)?));
    }
    let registry = match &a.registry {
        Some(uri) => Some(mlflow_client::Client::new(
            uri,
            mlflow_client::Credentials::from_env(),
        )?),
        None => None,
    };
    let mut models = Models {
        local,
        registry,
        fetched: HashMap::new(),
    };
    let mut page = audit::Page {
        since_ms: a.since.as_deref().map(millis).transpose()?,
        until_ms: a.until.as_deref().map(millis).transpose()?,
        request_id: a.request_id.clone(),
        after: None,
        limit: 5_000,
    };
    let bar = super::bar(0, "replayed");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {pos} decisions ({per_sec}, {elapsed})")
            .expect("valid template"),
    );
    let (mut replayed, mut identical) = (0u64, 0u64);
    let mut different = Vec::new();
    loop {
        let records = store.page(&page).await?;
        let Some(last) = records.last() else { break };
        page.after = Some((last.recorded_at_ms, last.decision_id.clone()));
        for r in &records {
            replayed += 1;
            let outcome = match models.get(r).await {
                Ok(scorer) => compare(&scorer, r),
                Err(e) => Some(json!({"error": e})),
            };
            match outcome {
                None => identical += 1,
                Some(mut d) => {
                    d["decision_id"] = json!(r.decision_id);
                    d["request_id"] = json!(r.request_id);
                    d["row_index"] = json!(r.row_index);
                    d["model"] = json!({"name": r.model_name, "version": r.model_version});
                    different.push(d);
                }
            }
        }
        bar.inc(records.len() as u64);
    }
    bar.finish_and_clear();
    let n_different = different.len();
    if a.json {
        super::print(&serde_json::to_string_pretty(&json!({
            "replayed": replayed,
            "identical": identical,
            "different": different,
        }))?)?;
    } else {
        for d in &different {
            let what = d.get("error").map_or_else(
                || format!("{} differs", d["what"]),
                |e| format!("not replayed: {e}"),
            );
            super::print(&format!(
                "{} (request {}, row {}): {what}",
                d["decision_id"].as_str().unwrap_or(""),
                d["request_id"].as_str().unwrap_or(""),
                d["row_index"]
            ))?;
        }
        super::print(&format!(
            "replayed {replayed} decisions: {identical} identical, {n_different} different"
        ))?;
    }
    if n_different > 0 {
        anyhow::bail!("{n_different} of {replayed} decisions did not replay identically");
    }
    Ok(())
}
