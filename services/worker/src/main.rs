use clap::Parser;
use worker::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = telemetry::init("worker");
    worker::run::run(settings).await
}
