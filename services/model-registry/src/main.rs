use model_registry::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings =
        Settings::parse_with_mlflow_env(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let _telemetry = telemetry::init("model-registry");
    for notice in settings.ignored.notices() {
        tracing::warn!("{notice}");
    }
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "model-registry ready");
    app.run_until_stopped().await?;
    Ok(())
}
