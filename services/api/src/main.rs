use api::{Application, Settings};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = telemetry::init("api");
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "api listening");
    app.run_until_stopped().await?;
    Ok(())
}
