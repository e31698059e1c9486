//! The model bundle: an MLflow model directory holding `MLmodel` and one versioned JSON
//! document with everything needed to score (spec, preprocessor, trees, calibration,
//! thresholds) and to audit (metrics, training score distribution, provenance).

use std::path::{Path, PathBuf};

use features::{FeatureKind, Preprocessor, Spec};
use serde::{Deserialize, Serialize};

use crate::calibration::{Calibration, Thresholds};
use crate::trees::Ensemble;
use crate::ModelError;

/// The bundle format this build reads and writes.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
/// File name of the JSON document inside the bundle directory.
pub const MODEL_FILE: &str = "model.json";

/// The bundle file a path names: a `model.json`, a bundle folder (holding one), or a training
/// output folder (`loanctl train --out DIR` writes the bundle to `DIR/model/`).
pub fn locate(path: &Path) -> Result<PathBuf, ModelError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    [path.join(MODEL_FILE), path.join("model").join(MODEL_FILE)]
        .into_iter()
        .find(|f| f.is_file())
        .ok_or_else(|| {
            ModelError::Io(format!(
                "no model bundle at {} (looked for {MODEL_FILE} and model/{MODEL_FILE}; \
                 `loanctl train --out DIR` writes its bundle to DIR/model/)",
                path.display()
            ))
        })
}
/// MLflow flavor name.
pub const FLAVOR: &str = "loan_default";
/// Refuse to parse model documents larger than this (inputs are hostile).
pub const MAX_BUNDLE_BYTES: u64 = 512 << 20;

/// Who trained the trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// Trained here with the `gbdt` crate; inputs go through the fitted preprocessor.
    Gbdt,
    /// Trained here with the histogram engine; inputs go through the fitted preprocessor.
    Hist,
    /// Imported from XGBoost's JSON; inputs go to the trees as given.
    Xgboost,
}

/// A histogram of probabilities over equal-width bins on [0, 1]: the drift baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreDistribution {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

impl ScoreDistribution {
    pub fn histogram(p: &[f64], bins: usize) -> ScoreDistribution {
        let edges = (0..=bins).map(|i| i as f64 / bins as f64).collect();
        let mut counts = vec![0u64; bins];
        for x in p {
            let b = ((x * bins as f64) as usize).min(bins - 1);
            counts[b] += 1;
        }
        ScoreDistribution { edges, counts }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// SHA-256 of the training data file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_rows: Option<usize>,
    /// Training settings, as given.
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Version of the code that built the bundle.
    pub code_version: String,
    /// RFC 3339 time of creation.
    pub created_at: String,
}

/// The JSON document of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format_version: u32,
    pub model_uuid: String,
    pub source: ModelSource,
    pub spec: Spec,
    pub preprocessor: serde_json::Value,
    pub ensemble: Ensemble,
    pub calibration: Calibration,
    pub thresholds: Thresholds,
    /// Reasons reported per decision (adverse-action notices usually give up to four).
    pub max_reasons: usize,
    /// Held-out metrics and anything else the trainer reported.
    #[serde(default)]
    pub metrics: serde_json::Value,
    pub score_distribution: ScoreDistribution,
    /// What drift is measured against (training shares of the score and of every feature);
    /// absent in bundles from before it and in imports without `--data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_baseline: Option<crate::drift::Baseline>,
    pub provenance: Provenance,
}

impl Bundle {
    /// Checks that the parts agree: format version, spec vs preprocessor, feature counts.
    /// Returns the parsed preprocessor.
    pub fn check(&self) -> Result<Preprocessor, ModelError> {
        let bad = |m: String| Err(ModelError::InvalidBundle(m));
        if self.format_version != BUNDLE_FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported (this build reads {BUNDLE_FORMAT_VERSION}); retrain or convert the model",
                self.format_version
            ));
        }
        self.spec
            .check()
            .map_err(|e| ModelError::InvalidBundle(e.to_string()))?;
        let pre = Preprocessor::from_json_value(self.preprocessor.clone())
            .map_err(|e| ModelError::InvalidBundle(e.to_string()))?;
        if pre.spec != self.spec {
            return bad("the preprocessor was fitted for a different feature spec".into());
        }
        if pre.width() != self.ensemble.n_features {
            return bad(format!(
                "the preprocessor produces {} columns but the trees read {}",
                pre.width(),
                self.ensemble.n_features
            ));
        }
        self.ensemble
            .check()
            .map_err(|e| ModelError::InvalidBundle(e.to_string()))?;
        let t = &self.thresholds;
        if t.approve.is_nan() || t.decline.is_nan() || t.approve > t.decline {
            return bad("approve threshold is above the decline threshold".into());
        }
        if let Some(b) = &self.drift_baseline {
            b.check(&self.spec).map_err(ModelError::InvalidBundle)?;
        }
        Ok(pre)
    }

    /// Writes `MLmodel` and `model.json` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        self.check()?;
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(MODEL_FILE);
        let json = serde_json::to_vec(self).map_err(|e| ModelError::Internal(e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| io(&path, e))?;
        let path = dir.join("MLmodel");
        std::fs::write(&path, self.mlmodel()).map_err(|e| io(&path, e))?;
        Ok(())
    }

    /// Reads a bundle and checks it. `path` is anything [`locate`] takes: the bundle's folder,
    /// its `model.json`, or a `loanctl train --out` folder.
    pub fn load(path: &Path) -> Result<Bundle, ModelError> {
        Ok(Bundle::load_with_digest(path)?.0)
    }

    /// [`Bundle::load`], with the SHA-256 (hex) of the bundle file's bytes: what the audit log
    /// records for each decision and replay checks a downloaded version against.
    pub fn load_with_digest(path: &Path) -> Result<(Bundle, String), ModelError> {
        use sha2::Digest;
        let file = locate(path)?;
        let meta = std::fs::metadata(&file).map_err(|e| io(&file, e))?;
        if meta.len() > MAX_BUNDLE_BYTES {
            return Err(ModelError::InvalidBundle(format!(
                "{} is {} bytes, above the {} byte limit",
                file.display(),
                meta.len(),
                MAX_BUNDLE_BYTES
            )));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
        let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Ok((Bundle::from_json(&text)?, digest))
    }

    /// Parses and checks a bundle document.
    pub fn from_json(text: &str) -> Result<Bundle, ModelError> {
        // Read the version first so an old or future bundle gets a clear message.
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::InvalidBundle(format!("not valid JSON: {e}")))?;
        match v.get("format_version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(BUNDLE_FORMAT_VERSION) => {}
            Some(n) => {
                return Err(ModelError::InvalidBundle(format!(
                    "format_version {n} is not supported (this build reads {BUNDLE_FORMAT_VERSION}); retrain or convert the model"
                )))
            }
            None => return Err(ModelError::InvalidBundle("no format_version: not a model bundle".into())),
        }
        let bundle: Bundle =
            serde_json::from_value(v).map_err(|e| ModelError::InvalidBundle(e.to_string()))?;
        bundle.check()?;
        Ok(bundle)
    }

    /// The MLflow `MLmodel` file: our flavor, the signature, uuid and creation time.
    pub fn mlmodel(&self) -> String {
        let inputs: Vec<serde_json::Value> = self
            .spec
            .features
            .iter()
            .map(|f| {
                let ty = match f.kind {
                    FeatureKind::Numeric => "double",
                    FeatureKind::Categorical => "string",
                    FeatureKind::Boolean => "boolean",
                };
                serde_json::json!({"type": ty, "name": f.name, "required": f.required})
            })
            .collect();
        let outputs = serde_json::json!([
            {"type": "double", "name": "default_probability", "required": true},
            {"type": "string", "name": "decision", "required": true},
        ]);
        // Single-quoted YAML scalars: only the quote itself needs escaping (doubled).
        let q = |s: String| format!("'{}'", s.replace('\'', "''"));
        let created = chrono::DateTime::parse_from_rfc3339(&self.provenance.created_at)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S%.6f")
                    .to_string()
            })
            .unwrap_or_else(|_| self.provenance.created_at.clone());
        format!(
            "artifact_path: model\nflavors:\n  {FLAVOR}:\n    data: {MODEL_FILE}\n    format_version: {BUNDLE_FORMAT_VERSION}\n    source: {source}\n    code_version: {code}\nmodel_uuid: {uuid}\nsignature:\n  inputs: {inputs}\n  outputs: {outputs}\n  params: null\nutc_time_created: {created}\n",
            source = serde_json::to_value(self.source).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            code = q(self.provenance.code_version.clone()),
            uuid = self.model_uuid,
            inputs = q(serde_json::Value::Array(inputs).to_string()),
            outputs = q(outputs.to_string()),
            created = q(created),
        )
    }
}

fn io(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io(format!("{}: {e}", path.display()))
}

/// A fresh model id, as MLflow writes it (32 hex digits).
pub fn new_model_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::ThresholdRule;
    use crate::trees::{Node, Tree};

    #[test]
    fn locate_takes_a_file_a_bundle_folder_or_a_training_output_folder() {
        let dir = std::env::temp_dir().join(format!("locate-{}", uuid::Uuid::new_v4().simple()));
        let bundle = dir.join("model");
        std::fs::create_dir_all(&bundle).unwrap();
        let file = bundle.join(MODEL_FILE);
        std::fs::write(&file, "{}").unwrap();
        assert_eq!(locate(&file).unwrap(), file);
        assert_eq!(locate(&bundle).unwrap(), file);
        assert_eq!(locate(&dir).unwrap(), file);
        let err = locate(&dir.join("nothing")).unwrap_err().to_string();
        assert!(err.contains("model/model.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use features::Raw;

    fn bundle() -> Bundle {
        let spec = Spec::from_json(
            r#"{"format_version": 1, "target": {"name": "y", "positive": "1"},
                "features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}]}"#,
        )
        .unwrap();
        let rows = vec![
            vec![Raw::Num(1.0), Raw::Num(2.0)],
            vec![Raw::Num(3.0), Raw::Num(5.0)],
        ];
        let pre = Preprocessor::fit(&spec, &rows).unwrap();
        let leaf = |v: f32| Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            default_left: true,
            value: v,
            cover: 1.0,
        };
        let split = Node {
            feature: 1,
            threshold: 0.0,
            left: 1,
            right: 2,
            default_left: true,
            value: 0.0,
            cover: 2.0,
        };
        Bundle {
            format_version: BUNDLE_FORMAT_VERSION,
            model_uuid: new_model_uuid(),
            source: ModelSource::Gbdt,
            spec: spec.clone(),
            preprocessor: serde_json::to_value(&pre).unwrap(),
            ensemble: Ensemble {
                n_features: 2,
                base_margin: 0.0,
                trees: vec![Tree {
                    nodes: vec![split, leaf(-1.0), leaf(1.0)],
                }],
            },
            calibration: Calibration::IDENTITY,
            thresholds: Thresholds {
                approve: 0.3,
                decline: 0.6,
                rule: ThresholdRule::F1,
                review_recall: 0.9,
            },
            max_reasons: 4,
            metrics: serde_json::Value::Null,
            score_distribution: ScoreDistribution::histogram(&[0.1, 0.9], 10),
            drift_baseline: None,
            provenance: Provenance {
                code_version: "test".into(),
                created_at: now_rfc3339(),
                ..Provenance::default()
            },
        }
    }

    #[test]
    fn save_load_round_trip_and_mlmodel() {
        let dir = std::env::temp_dir().join(format!("bundle-{}", new_model_uuid()));
        let b = bundle();
        b.save(&dir).unwrap();
        let back = Bundle::load(&dir).unwrap();
        assert_eq!(back.ensemble, b.ensemble);
        let mlmodel = std::fs::read_to_string(dir.join("MLmodel")).unwrap();
        assert!(
            mlmodel.contains(&format!("model_uuid: {}", b.model_uuid))
                && mlmodel.contains("loan_default:")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_version_feature_count_or_spec_is_refused_clearly() {
        let mut v = serde_json::to_value(bundle()).unwrap();
        v["format_version"] = serde_json::json!(2);
        let err = Bundle::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("format_version 2 is not supported"), "{err}");

        let mut b = bundle();
        b.ensemble.n_features = 3;
        let err = Bundle::from_json(&serde_json::to_string(&b).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("produces 2 columns but the trees read 3"),
            "{err}"
        );

        let mut b = bundle();
        b.spec.features[1].name = "c".into();
        let err = Bundle::from_json(&serde_json::to_string(&b).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("different feature spec"), "{err}");

        let err = Bundle::from_json("{\"hello\": 1}").unwrap_err().to_string();
        assert!(err.contains("not a model bundle"), "{err}");
    }
}
