//! `loanctl`: train, evaluate, score and import loan-default models from the command line.

mod commands;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Loan-default scoring: train models, evaluate them, score files, import XGBoost models.
#[derive(Parser, Debug)]
#[command(name = "loanctl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Feature spec tools.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Train a model: split, fit, calibrate, evaluate; write the bundle, report and plots.
    Train(Box<commands::train::Args>),
    /// Evaluate a model on a labelled CSV.
    Evaluate(commands::evaluate::Args),
    /// Score a CSV of applications (streamed; any size).
    Score(commands::score::Args),
    /// Wrap an XGBoost JSON model (save_model("*.json")) into a bundle.
    ImportXgboost(commands::import::Args),
    /// Write a seeded synthetic CSV shaped like a given one (for benchmarks and load tests).
    Generate(commands::generate::Args),
    /// Run the whole platform in this process: registry, a first model, API and batch worker.
    Quickstart(commands::quickstart::Args),
    /// Model registry tools.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Re-score recorded decisions (the audit log) with the exact models that made them and
    /// report any that differ; exits 0 only when all are identical.
    Replay(commands::replay::Args),
    /// Compare a CSV of applications with the model's training data: PSI of the score and of
    /// every feature, a report and a plot per drifted feature.
    Drift(commands::drift::Args),
}

#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// Print an argon2id hash of a password for the registry's users file (the password is read
    /// from a prompt or standard input, never from the command line).
    HashPassword(commands::registry::HashPasswordArgs),
}

#[derive(Subcommand, Debug)]
enum SpecCommand {
    /// Draft a feature spec from a CSV and print it (edit reasons, ranges and protected flags).
    Infer {
        /// The CSV to read (the whole file is read).
        #[arg(long)]
        data: PathBuf,
        /// The label column.
        #[arg(long)]
        target: String,
        /// The label value that means "defaulted".
        #[arg(long)]
        positive: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_cli();
    let result = match cli.command {
        Command::Spec(SpecCommand::Infer {
            data,
            target,
            positive,
        }) => commands::spec::infer(&data, &target, &positive),
        Command::Train(a) => commands::train::run(&a),
        Command::Evaluate(a) => commands::evaluate::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Drift(a) => commands::drift::run(a),
        Command::ImportXgboost(a) => commands::import::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Quickstart(a) => commands::quickstart::run(a),
        Command::Registry(RegistryCommand::HashPassword(a)) => commands::registry::hash_password(a),
        Command::Replay(a) => commands::replay::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
