//! `loanctl train --registry` against the real registry (in process, embedded SQLite), then the
//! registered model resolved by alias through the typed client.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_logs_the_run_registers_a_version_and_moves_the_alias() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::registry(dir.path()).await;
    let out = dir.path().join("gc");
    for _ in 0..2 {
        common::train(&url, &out, 20, Some("champion")).await;
    }
    let client = mlflow_client::Client::new(&url, None).unwrap();
    let (mv, path) = client
        .download_model("models:/loan-default@champion", &dir.path().join("dl"))
        .await
        .unwrap();
    assert_eq!(
        mv.version, "2",
        "the second training is version 2 and holds the alias"
    );
    let downloaded = std::fs::read(path.join("model.json")).unwrap();
    assert_eq!(
        downloaded,
        std::fs::read(out.join("model/model.json")).unwrap(),
        "the bundle arrives byte for byte"
    );
    let bundle = model::Bundle::load(&path).unwrap();
    model::Scorer::new(bundle).unwrap();
    assert!(path.join("MLmodel").is_file());
    // Run artifacts include the report and plots; metrics were logged.
    let run = client.get_model_version("loan-default", "1").await.unwrap();
    assert!(!run.run_id.is_empty());
    let missing = client
        .download_model("models:/loan-default@nope", &dir.path().join("x"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("INVALID_PARAMETER_VALUE"));
}
