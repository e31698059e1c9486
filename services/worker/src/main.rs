use clap::Parser;
use worker::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = telemetry::init("worker");
    let app = Application::build(settings).await?;
    // Port 0 picks a free port; this line says which (tests and operators read it).
    eprintln!("worker: health and metrics on port {}", app.port());
    app.run_until_stopped().await
}
