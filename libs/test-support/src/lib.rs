//! Shared by the tests of the services and the CLI (a dev-dependency only): the bundled
//! German-credit data, a small model trained on it, a fresh PostgreSQL database, a bundle
//! registered in a registry, and an OTLP/HTTP receiver that keeps what it is sent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The repository's root (the bundled data is under `data/`).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A new folder under the system's temporary folder, named `{name}-{uuid}`.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The bundled German-credit feature spec.
pub fn german_spec() -> features::Spec {
    features::Spec::from_json(
        &std::fs::read_to_string(format!("{REPO}/data/german_credit.spec.json")).unwrap(),
    )
    .unwrap()
}

/// The bundled German-credit CSV: its header and its rows.
pub fn german_csv() -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut rdr = csv::Reader::from_path(format!("{REPO}/data/german_credit.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    (headers, rdr.records().map(Result::unwrap).collect())
}

/// Trains `trees` trees (seeded) on the German data and saves the bundle in `dir`; returns `dir`.
pub fn train_german_bundle(dir: &Path, trees: usize, seed: u64) -> PathBuf {
    let spec = german_spec();
    let (headers, records) = german_csv();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let cols: Vec<usize> = spec.features.iter().map(|f| column(&f.name)).collect();
    let target = column(&spec.target.name);
    let raws: Vec<Vec<features::Raw>> = records
        .iter()
        .map(|r| {
            cols.iter()
                .map(|&c| features::Raw::from_cell(&r[c]))
                .collect()
        })
        .collect();
    let y: Vec<bool> = records
        .iter()
        .map(|r| r[target] == spec.target.positive)
        .collect();
    let cfg = model::pipeline::TrainConfig {
        booster: model::train::TrainParams {
            trees,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let fitted = model::pipeline::fit(
        &spec,
        &raws,
        &y,
        &cfg,
        model::pipeline::provenance_now(),
        &mut |_| {},
    )
    .unwrap();
    fitted.bundle.save(dir).unwrap();
    dir.to_path_buf()
}

/// A new, empty PostgreSQL database `{prefix}_{uuid}` on the local server (trust auth); its URL.
pub async fn fresh_postgres(prefix: &str) -> String {
    use sqlx::Connection;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 must be running (scripts/services.sh starts it)");
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Logs `bundle` as a run's `model/` in the registry at `registry`, registers it as a new version
/// of `model` and moves `alias` to it. Returns the version.
pub async fn register(registry: &str, model: &str, bundle: &Path, alias: &str) -> String {
    let c = mlflow_client::Client::new(registry, None).unwrap();
    let exp = c.get_or_create_experiment("tests").await.unwrap();
    let run = c.create_run(&exp, "test", &[]).await.unwrap();
    c.upload_dir(&run.artifact_uri, "model", bundle)
        .await
        .unwrap();
    c.ensure_registered_model(model).await.unwrap();
    let mv = c
        .create_model_version(model, &format!("runs:/{}/model", run.run_id), &run.run_id)
        .await
        .unwrap();
    c.set_alias(model, alias, &mv.version).await.unwrap();
    mv.version
}

/// A TLS front for a plain-HTTP server on loopback, with a new self-signed certificate for
/// `127.0.0.1` and `localhost`.
pub struct TlsProxy {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The certificate, PEM: the CA a client must trust.
    pub ca_pem: PathBuf,
}

/// Starts a TLS-terminating proxy in front of `upstream` (`http://127.0.0.1:<port>`) on the
/// current Tokio runtime.
pub fn tls_proxy(upstream: &str) -> TlsProxy {
    use std::sync::Arc;
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = tmp("tls-proxy");
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        std_listener.local_addr().unwrap().port()
    );
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate fails here; nothing to do.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    TlsProxy { url, ca_pem }
}

/// The bodies an OTLP/HTTP receiver was sent, in order.
pub type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// Starts an OTLP/HTTP receiver on a free loopback port, on the current Tokio runtime. Returns
/// its base URL (for `OTEL_EXPORTER_OTLP_ENDPOINT`) and what is posted to `/v1/traces`.
pub fn otlp_receiver() -> (String, Received) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let received = Received::default();
    let sink = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                sink.lock().unwrap().push(body.to_vec());
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, received)
}
