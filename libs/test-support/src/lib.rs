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
    train_german_bundle_on(dir, trees, seed, usize::MAX)
}

/// As [`train_german_bundle`], on the first `rows` rows only (so with a preprocessor fitted on
/// other data: the same spec, another encoding).
pub fn train_german_bundle_on(dir: &Path, trees: usize, seed: u64, rows: usize) -> PathBuf {
    let spec = german_spec();
    let (headers, mut records) = german_csv();
    records.truncate(rows);
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
        .create_model_version(
            model,
            &format!("runs:/{}/model", run.run_id),
            &run.run_id,
            &[],
        )
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

/// The URL of a server that accepts connections and never answers (a stalled registry): each
/// connection is held open until the test process ends.
pub fn stalled_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
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

/// Which modules of a crate import which: module path (segments) to the modules it names.
/// `src` is the crate's `src` folder. A module imports another when its code names a path into it
/// (`crate::a::b`, `super::x`, `self::child`, `child::item`, groups `crate::{a, b}` included);
/// names re-exported by `lib.rs` (`pub use a::Name`) count as paths into their module. `lib.rs`
/// itself and binaries are left out: they only declare and re-export; so are unit tests.
pub fn import_graph(
    src: &std::path::Path,
) -> std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> {
    use std::collections::{BTreeMap, BTreeSet};
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable src folder") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    // Module path (segments) of each file.
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut root_text = String::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("inside src");
        let mut segs: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if segs.last().is_some_and(|s| s == "mod") {
            segs.pop();
        }
        // Code only: comments dropped, and unit tests (from `#[cfg(test)]` on) left out.
        let text: String = std::fs::read_to_string(f)
            .expect("readable source")
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        if segs == ["lib"] {
            root_text = text;
        } else if segs != ["main"] {
            modules.insert(segs, text);
        }
    }
    let paths = |text: &str| -> Vec<Vec<String>> {
        let b = text.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let starts = ident(b[i]) && (i == 0 || !(ident(b[i - 1]) || b[i - 1] == b':'));
            if !starts {
                i += 1;
                continue;
            }
            // Read `a::b::c` and an optional trailing `::{...}` group.
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < b.len() && ident(b[j]) {
                    j += 1;
                }
                segs.push(text[s..j].to_string());
                if text[j..].starts_with("::") {
                    j += 2;
                    if j < b.len() && b[j] == b'{' {
                        let end = text[j..].find('}').map_or(b.len(), |e| j + e);
                        for item in text[j + 1..end].split(',') {
                            let mut full = segs.clone();
                            full.extend(
                                item.trim()
                                    .split("::")
                                    .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                                    .filter(|s| !s.is_empty()),
                            );
                            out.push(full);
                        }
                        j = end;
                        break;
                    }
                    if j < b.len() && ident(b[j]) {
                        continue;
                    }
                }
                if segs.len() > 1 {
                    out.push(segs.clone());
                }
                break;
            }
            i = j.max(i + 1);
        }
        out
    };
    // `pub use a::b::Name;` in lib.rs: `crate::Name` is in module `a::b`.
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in root_text.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ") {
            for p in paths(rest.trim_end_matches(';')) {
                if let Some((name, module)) = p.split_last() {
                    reexports.insert(name.clone(), module.to_vec());
                }
            }
        }
    }
    let resolve = |segs: &[String]| -> Option<Vec<String>> {
        (1..=segs.len())
            .rev()
            .map(|n| segs[..n].to_vec())
            .find(|p| modules.contains_key(p))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &modules {
        let children: BTreeSet<&str> = modules
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
            .map(|k| k[module.len()].as_str())
            .collect();
        for p in paths(text) {
            let absolute: Vec<String> = match p[0].as_str() {
                "crate" => {
                    let rest = &p[1..];
                    match rest.first().and_then(|n| reexports.get(n)) {
                        Some(m) if resolve(rest).is_none() => m.clone(),
                        _ => rest.to_vec(),
                    }
                }
                "super" => {
                    let mut base = module.clone();
                    let mut rest = &p[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                "self" => module.iter().chain(&p[1..]).cloned().collect(),
                first if children.contains(first) => module.iter().chain(&p).cloned().collect(),
                _ => continue,
            };
            if let Some(target) = resolve(&absolute) {
                if &target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    for module in modules.keys() {
        edges.entry(module.clone()).or_default();
    }
    edges
}

/// Pairs of modules that import each other directly ("a module imports one that imports it
/// back"), as `a <-> b`.
pub fn mutual_imports(src: &std::path::Path) -> Vec<String> {
    let edges = import_graph(src);
    let mut out = Vec::new();
    for (a, targets) in &edges {
        for b in targets {
            if a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                out.push(format!("{} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    out
}

/// Circles of imports among a crate's modules: each returned list is a set of modules that import
/// each other, directly or round about (a strongly connected component of [`import_graph`]).
pub fn import_cycles(src: &std::path::Path) -> Vec<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let edges = import_graph(src);
    // Tarjan's strongly connected components.
    struct Tarjan<'g> {
        edges: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, (usize, usize)>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &Vec<String>) {
            self.index.insert(v.clone(), (self.next, self.next));
            self.next += 1;
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            let targets: Vec<Vec<String>> = self
                .edges
                .get(v)
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default();
            for w in &targets {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[v].1.min(self.index[w].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                } else if self.on_stack.contains(w) {
                    let low = self.index[v].1.min(self.index[w].0);
                    self.index.get_mut(v).expect("visited").1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    scc.push(w.join("::"));
                    if done {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges: &edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// A service's command line flattens several libraries' `Settings`: their argument groups must
/// have distinct ids. clap refuses two of one id, but only a debug build checks (and panics at
/// start); this checks in any build.
pub fn assert_distinct_arg_groups(cmd: &clap::Command) {
    let ids: Vec<&str> = cmd.get_groups().map(|g| g.get_id().as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
