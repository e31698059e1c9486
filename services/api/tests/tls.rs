//! HTTPS clients: the registry client (and so the API's model poller) and the OTLP exporter
//! speak TLS, check certificates against the CAs they are given (SSL_CERT_FILE,
//! MLFLOW_TRACKING_SERVER_CERT_PATH, OTEL_EXPORTER_OTLP_CERTIFICATE), refuse an unknown one, and
//! skip checking only with MLFLOW_TRACKING_INSECURE_TLS. Real servers behind a local TLS proxy
//! with a self-signed certificate. One test in its own binary: it sets environment variables
//! and the process-wide tracing subscriber.

use clap::Parser;
use mlflow_client::{Client, TlsSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_collector_are_reached_over_https_with_their_ca() {
    for var in [
        "SSL_CERT_FILE",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
        "MLFLOW_TRACKING_INSECURE_TLS",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ] {
        std::env::remove_var(var);
    }
    // The collector behind TLS; the exporter trusts it through OTEL_EXPORTER_OTLP_CERTIFICATE.
    let (receiver, received) = test_support::otlp_receiver();
    let collector = test_support::tls_proxy(&receiver);
    std::env::set_var("OTEL_EXPORTER_OTLP_CERTIFICATE", &collector.ca_pem);
    let guard = telemetry::init_with("api-tls-test", Some(&collector.url));

    // A registry with a champion, behind TLS.
    let dir = test_support::tmp("tls-registry");
    let settings = model_registry::Settings::try_parse_from([
        "model-registry",
        "--port",
        "0",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .unwrap();
    let registry = model_registry::Application::build(settings).await.unwrap();
    let plain = format!("http://127.0.0.1:{}", registry.port());
    tokio::spawn(registry.run_until_stopped());
    let bundle = test_support::train_german_bundle(&dir.join("bundle"), 5, 42);
    test_support::register(&plain, "loan-default", &bundle, "champion").await;
    let tls = test_support::tls_proxy(&plain);

    // Not trusted: refused, and the error says why.
    let untrusted = Client::with_tls(&tls.url, None, &TlsSettings::default()).unwrap();
    let err = untrusted
        .get_version_by_alias("loan-default", "champion")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate"),
        "an unknown CA is refused with a clear error: {err}"
    );
    // Trusted through a CA file, or not checked at all when asked.
    for tls_settings in [
        TlsSettings {
            ca_files: vec![tls.ca_pem.clone()],
            insecure: false,
        },
        TlsSettings {
            ca_files: vec![],
            insecure: true,
        },
    ] {
        let c = Client::with_tls(&tls.url, None, &tls_settings).unwrap();
        let v = c
            .get_version_by_alias("loan-default", "champion")
            .await
            .unwrap();
        assert_eq!(v.version, "1");
    }
    // From the environment: SSL_CERT_FILE, then MLflow's variables.
    let by_env = |var: &str, value: &str| {
        std::env::set_var(var, value);
        let c = Client::from_env(&tls.url).unwrap();
        std::env::remove_var(var);
        c
    };
    for (var, value) in [
        ("SSL_CERT_FILE", tls.ca_pem.to_str().unwrap()),
        ("MLFLOW_TRACKING_INSECURE_TLS", "true"),
    ] {
        let v = by_env(var, value)
            .get_version_by_alias("loan-default", "champion")
            .await
            .unwrap();
        assert_eq!(v.version, "1", "{var}");
    }

    // The API's poller follows the champion over https with MLFLOW_TRACKING_SERVER_CERT_PATH.
    std::env::set_var("MLFLOW_TRACKING_SERVER_CERT_PATH", &tls.ca_pem);
    let cache = test_support::tmp("tls-api-cache");
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--tracking-uri",
        &tls.url,
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ])
    .unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let mut ready = serde_json::Value::Null;
    for _ in 0..200 {
        let r = http.get(format!("{url}/readyz")).send().await.unwrap();
        if r.status() == 200 {
            ready = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready["model"]["version"], "1",
        "the API loaded the champion over https"
    );
    let r = http.get(format!("{url}/v1/model")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The request's span went to the collector over https.
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();
    assert!(
        !received.lock().unwrap().is_empty(),
        "spans were exported to the https collector"
    );
}
