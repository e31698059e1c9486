//! `loanctl train`: the flags of a training, turned into a [`training::Config`]; progress bars
//! on stderr and the report on stdout.

use std::path::PathBuf;

use anyhow::Result;
use model::pipeline::TrainConfig;
use model::smote::SmoteParams;
use model::train::TrainParams;
use model::ThresholdRule;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Labelled CSV of past applications.
    #[arg(long)]
    pub data: PathBuf,
    /// Feature spec (JSON).
    #[arg(long)]
    pub spec: PathBuf,
    /// Output folder: model/ (the bundle), report.json, report.md and plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Share of rows held out for evaluation (stratified).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed for the split, SMOTE, folds and subsampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tree learner: hist (histogram boosting, XGBoost's objective, missing-value directions,
    /// monotone constraints) or gbdt (the `gbdt` crate, exact splits).
    #[arg(long, default_value = "hist", value_parser = ["hist", "gbdt"])]
    pub engine: String,
    #[arg(long, default_value_t = 200)]
    pub trees: usize,
    #[arg(long, default_value_t = 4)]
    pub max_depth: u32,
    #[arg(long, default_value_t = 0.05)]
    pub learning_rate: f32,
    /// Minimum rows per leaf (gbdt engine).
    #[arg(long, default_value_t = 5)]
    pub min_leaf: usize,
    /// L2 penalty on leaf weights (hist engine; XGBoost's lambda).
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// Least hessian sum in a child (hist engine; XGBoost's min_child_weight).
    #[arg(long, default_value_t = 1.0)]
    pub min_child_weight: f64,
    /// Least gain for a split (hist engine; XGBoost's gamma).
    #[arg(long, default_value_t = 0.0)]
    pub gamma: f64,
    /// Stop adding trees when the log loss on a held-out tenth of the training rows has not
    /// improved for this many trees (hist engine; 0 = off).
    #[arg(long, default_value_t = 0)]
    pub early_stopping_rounds: usize,
    /// Share of rows each tree sees.
    #[arg(long, default_value_t = 1.0)]
    pub row_subsample: f64,
    /// Share of columns each tree may use.
    #[arg(long, default_value_t = 1.0)]
    pub col_subsample: f64,
    /// Quantile bins per numeric column (gbdt: 0 = exact splits; hist: 0 = 256, at most 256).
    #[arg(long, default_value_t = 0)]
    pub bins: usize,
    /// Train on the data as it is, without SMOTE oversampling.
    #[arg(long)]
    pub no_smote: bool,
    /// SMOTE neighbours.
    #[arg(long, default_value_t = 5)]
    pub smote_k: usize,
    /// Defaults per non-default after SMOTE (1.0 = balanced).
    #[arg(long, default_value_t = 1.0)]
    pub smote_ratio: f64,
    /// Above this many rows of the rarer class SMOTE is skipped and that class is weighted up to
    /// the same ratio instead (hist engine; the gbdt engine then trains unbalanced).
    #[arg(long, default_value_t = model::smote::DEFAULT_MAX_MINORITY)]
    pub smote_max_minority: usize,
    /// Folds for out-of-fold calibration and threshold choice.
    #[arg(long, default_value_t = 3)]
    pub calibration_folds: usize,
    /// How to choose the decline threshold: f1, or cost (with the two cost options).
    #[arg(long, default_value = "f1", value_parser = ["f1", "cost"])]
    pub threshold_rule: String,
    /// Cost of approving an applicant who defaults (rule "cost").
    #[arg(long, default_value_t = 5.0)]
    pub cost_false_approve: f64,
    /// Cost of declining an applicant who would have repaid (rule "cost").
    #[arg(long, default_value_t = 1.0)]
    pub cost_false_decline: f64,
    /// Share of defaulters that must not be auto-approved (sets the review threshold).
    #[arg(long, default_value_t = 0.9)]
    pub review_recall: f64,
    /// Reasons given per decision.
    #[arg(long, default_value_t = 4)]
    pub max_reasons: usize,
    /// Also train without SMOTE and report both calibrations side by side.
    #[arg(long)]
    pub compare_no_smote: bool,
    /// Model registry (MLflow tracking URI) to log the run to and register the model in.
    /// Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN.
    #[arg(long)]
    pub registry: Option<String>,
    /// Experiment the run is logged to (with --registry).
    #[arg(long, default_value = "loan-default")]
    pub experiment: String,
    /// Registered model name for the new version (with --registry).
    #[arg(long, env = "MODEL_NAME", default_value = "loan-default")]
    pub register_as: String,
    /// Alias to move to the new version, e.g. champion (with --registry).
    #[arg(long)]
    pub alias: Option<String>,
}

impl Args {
    /// The training these flags describe.
    pub fn config(&self) -> Result<training::Config> {
        let model = TrainConfig {
            booster: TrainParams {
                engine: self.engine.parse().map_err(anyhow::Error::msg)?,
                trees: self.trees,
                max_depth: self.max_depth,
                learning_rate: self.learning_rate,
                min_leaf: self.min_leaf,
                row_subsample: self.row_subsample,
                col_subsample: self.col_subsample,
                bins: self.bins,
                seed: self.seed,
                lambda: self.lambda,
                min_child_weight: self.min_child_weight,
                gamma: self.gamma,
                early_stopping_rounds: self.early_stopping_rounds,
                ..TrainParams::default()
            },
            smote: (!self.no_smote).then_some(SmoteParams {
                k: self.smote_k,
                ratio: self.smote_ratio,
                seed: self.seed,
                max_minority: self.smote_max_minority,
            }),
            calibration_folds: self.calibration_folds,
            threshold_rule: match self.threshold_rule.as_str() {
                "cost" => ThresholdRule::ExpectedCost {
                    false_approve: self.cost_false_approve,
                    false_decline: self.cost_false_decline,
                },
                _ => ThresholdRule::F1,
            },
            review_recall: self.review_recall,
            max_reasons: self.max_reasons,
        };
        Ok(training::Config {
            data: self.data.clone(),
            spec: self.spec.clone(),
            out: self.out.clone(),
            test_fraction: self.test_fraction,
            seed: self.seed,
            model,
            compare_no_smote: self.compare_no_smote,
            registry: self.registry.clone().map(|url| training::Registry {
                url,
                experiment: self.experiment.clone(),
                register_as: self.register_as.clone(),
                alias: self.alias.clone(),
                source: "loanctl train".into(),
                job_id: None,
            }),
        })
    }
}

pub fn run(a: &Args) -> Result<()> {
    let trained = train_with_progress(&a.config()?, true)?;
    crate::commands::print(&trained.report)
}

/// Trains with notes on stderr and, when `bars`, a trees-per-second bar per stage.
pub fn train_with_progress(cfg: &training::Config, bars: bool) -> Result<training::Trained> {
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    training::train::run(cfg, &mut |event| match event {
        training::Event::Note(text) => eprintln!("{text}"),
        training::Event::Trees { stage, done, total } if bars => {
            let pb = match &bar {
                Some((s, pb)) if s == stage => pb,
                _ => {
                    &bar.insert((stage.to_string(), crate::commands::tree_bar(stage)))
                        .1
                }
            };
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
        training::Event::Trees { .. } => {}
        training::Event::StageDone(_) => {
            if let Some((_, pb)) = bar.take() {
                pb.finish_and_clear();
            }
        }
    })
}
