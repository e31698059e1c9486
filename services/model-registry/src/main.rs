use clap::Parser;
use model_registry::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = telemetry::init("model-registry");
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "model-registry ready");
    app.run_until_stopped().await?;
    Ok(())
}
