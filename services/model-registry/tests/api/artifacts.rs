use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_app_with, Db};
use crate::on_both_backends;

const A: &str = "/api/2.0/mlflow-artifacts/artifacts";

async fn upload_list_download_delete(db: Db) {
    let app = spawn_app(db).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (s, _) = app
        .raw(
            Method::PUT,
            &format!("{A}/1/run/artifacts/model/model.bin"),
            big.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .raw(
            Method::PUT,
            &format!("{A}/1/run/artifacts/report%20final.md"),
            b"# r".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = app
        .raw(Method::GET, &format!("{A}?path=1/run/artifacts"), vec![])
        .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["files"],
        serde_json::json!([{"path": "model", "is_dir": true}, {"path": "report final.md", "is_dir": false, "file_size": 3}])
    );
    let (s, body) = app
        .raw(
            Method::GET,
            &format!("{A}/1/run/artifacts/model/model.bin"),
            vec![],
        )
        .await;
    assert_eq!((s, body == big), (StatusCode::OK, true));
    // Missing directory lists as {}; missing file is 404.
    let (_, body) = app
        .raw(Method::GET, &format!("{A}?path=1/nothing"), vec![])
        .await;
    assert_eq!(body, b"{}");
    let (s, _) = app
        .raw(
            Method::GET,
            &format!("{A}/1/run/artifacts/missing.txt"),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .raw(
            Method::DELETE,
            &format!("{A}/1/run/artifacts/model"),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .raw(
            Method::GET,
            &format!("{A}/1/run/artifacts/model/model.bin"),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
on_both_backends!(upload_list_download_delete, upload_list_download_delete);

async fn traversal_in_every_form_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let secret = app.dir.join("secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    std::fs::create_dir_all(app.dir.join("artifacts")).unwrap();
    // A symlink planted inside the root that points out of it.
    std::os::unix::fs::symlink(&app.dir, app.dir.join("artifacts").join("escape")).unwrap();
    for path in [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "%252e%252e/secret.txt",
        "a/..%2f..%2fsecret.txt",
        "%2Fetc%2Fpasswd",
        "escape/secret.txt",
        "a%5c..%5csecret.txt",
        "a/b%23frag",
        "file:%2F%2F%2Fetc%2Fpasswd",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let (s, body) = app
                .raw(method.clone(), &format!("{A}/{path}"), b"x".to_vec())
                .await;
            assert!(
                s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
                "{method} {path}: {s}"
            );
            assert!(
                !String::from_utf8_lossy(&body).contains("do not serve"),
                "{method} {path} leaked the file"
            );
        }
        let (s, _) = app
            .raw(Method::GET, &format!("{A}?path={path}"), vec![])
            .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::OK,
            "list {path}: {s}"
        );
    }
    let (_, body) = app
        .raw(Method::GET, &format!("{A}?path=escape"), vec![])
        .await;
    assert!(!String::from_utf8_lossy(&body).contains("secret.txt"));
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "do not serve",
        "nothing was overwritten"
    );
    // A query string or fragment cannot smuggle a path either.
    let (s, _) = app
        .raw(
            Method::GET,
            &format!("{A}/ok.txt?path=../secret.txt"),
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
on_both_backends!(
    traversal_in_every_form_is_refused,
    traversal_in_every_form_is_refused
);

/// Downloads carry the type MLflow gives them (its text files, `MLmodel` and `MLproject`
/// included, as `text/plain`; what it cannot name as `application/octet-stream`) and
/// `X-Content-Type-Options: nosniff`, so that a browser never runs an uploaded file as a page.
async fn downloads_are_typed_and_not_sniffed(db: Db) {
    let app = spawn_app(db).await;
    for (name, expected) in [
        ("a.txt", "text/plain"),
        ("MLmodel", "text/plain"),
        ("mlproject", "text/plain"),
        ("conf.yaml", "text/plain"),
        ("b.pkl", "application/octet-stream"),
        ("c.png", "image/png"),
        ("d.pdf", "application/pdf"),
    ] {
        let path = format!("{A}/1/run/artifacts/{name}");
        let (s, _) = app
            .raw(Method::PUT, &path, b"<html>x</html>".to_vec())
            .await;
        assert_eq!(s, StatusCode::OK);
        let r = app
            .client
            .get(app.url(&path))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        let ct = h["content-type"].to_str().unwrap();
        assert_eq!(ct, expected, "{name}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{name}");
    }
}

on_both_backends!(
    downloads_are_typed_and_not_sniffed,
    downloads_are_typed_and_not_sniffed
);

/// The UI's downloads: `/get-artifact` (a run's file) and `/model-versions/get-artifact` (a
/// version's), served from the store; a path that climbs out is MLflow's exact "Invalid path".
async fn ui_downloads_of_run_and_version_files(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("ui-downloads").await;
    let run = app.create_run(&exp).await;
    let (_, v) = app.get("/runs/get", &[("run_id", &run)]).await;
    let root = v["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let rel = root.strip_prefix("mlflow-artifacts:/").unwrap().to_string();
    let (s, _) = app
        .raw(
            Method::PUT,
            &format!("{A}/{rel}/model/MLmodel"),
            b"flavors: {}".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.post(
        "/registered-models/create",
        serde_json::json!({"name": "m"}),
    )
    .await;
    let (s, v) = app
        .post(
            "/model-versions/create",
            serde_json::json!({"name": "m", "source": format!("runs:/{run}/model"), "run_id": run}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let get = |path: String, query: Vec<(&'static str, String)>| {
        let r = app.client.get(app.url(&path)).query(&query).send();
        async move {
            let r = r.await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (s, body) = get(
        "/get-artifact".into(),
        vec![("run_id", run.clone()), ("path", "model/MLmodel".into())],
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "flavors: {}"));
    // A version whose source is the store's root itself.
    let (s, _) = app
        .raw(
            Method::PUT,
            &format!("{A}/root.txt"),
            b"at the root".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post(
            "/model-versions/create",
            serde_json::json!({"name": "m", "source": "mlflow-artifacts:"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, body) = get(
        "/model-versions/get-artifact".into(),
        vec![
            ("name", "m".into()),
            ("version", "2".into()),
            ("path", "root.txt".into()),
        ],
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "at the root"));
    let (s, body) = get(
        "/model-versions/get-artifact".into(),
        vec![
            ("name", "m".into()),
            ("version", "1".into()),
            ("path", "MLmodel".into()),
        ],
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "flavors: {}"));
    for (path, query) in [
        (
            "/api/2.0/mlflow/artifacts/list",
            vec![("run_id", run.clone()), ("path", "../path".to_string())],
        ),
        (
            "/get-artifact",
            vec![("run_id", run.clone()), ("path", "../path".into())],
        ),
        (
            "//model-versions/get-artifact",
            vec![
                ("name", "model".into()),
                ("version", "1".into()),
                ("path", "../path".into()),
            ],
        ),
    ] {
        let (s, body) = get(path.into(), query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"], "Invalid path", "{path}");
    }
}

on_both_backends!(
    ui_downloads_of_run_and_version_files,
    ui_downloads_of_run_and_version_files
);

/// MLflow's UI upload: the file is the raw body (any type, or none), stored under the run's
/// artifacts and read back with `/get-artifact`; requests missing a part get MLflow's words.
async fn ui_upload_of_a_run_artifact(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("ui-upload").await;
    let run = app.create_run(&exp).await;
    let up = "/ajax-api/2.0/mlflow/upload-artifact";
    let post = |query: Vec<(&'static str, String)>, body: &'static str| {
        let r = app.client.post(app.url(up)).query(&query).body(body).send();
        async move {
            let r = r.await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (s, body) = post(
        vec![("run_uuid", run.clone()), ("path", "notes/test.txt".into())],
        "hello world",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let r = app
        .client
        .get(app.url("/get-artifact"))
        .query(&[("run_uuid", run.as_str()), ("path", "notes/test.txt")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello world");
    for (query, body, message) in [
        (vec![], "x", "Request must specify run_uuid."),
        (
            vec![("run_uuid", run.clone())],
            "x",
            "Request must specify path.",
        ),
        (
            vec![("run_uuid", run.clone()), ("path", "../t.txt".into())],
            "x",
            "Invalid path",
        ),
        (
            vec![("run_uuid", run.clone()), ("path", "t.txt".into())],
            "",
            "Request must specify data.",
        ),
    ] {
        let (s, text) = post(query, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["message"], message);
    }
    // Not from another site, whatever the body.
    let r = app
        .client
        .post(app.url(up))
        .query(&[("run_uuid", run.as_str()), ("path", "x.txt")])
        .header("Origin", "https://evil.example")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

on_both_backends!(ui_upload_of_a_run_artifact, ui_upload_of_a_run_artifact);

/// With a local default artifact root (`file://…`, as MLflow's quickstart runs), the server
/// owns that folder: the UI's upload, listing and downloads work on runs there, and a logged
/// model's files are listed and served; names that are HTTP tokens are not quoted in
/// Content-Disposition (as mlflow server writes them).
async fn a_local_default_root_is_served(db: Db) {
    let app = spawn_app_with(db, &["--default-artifact-root", "file://{dir}/local-root"]).await;
    let exp = app.create_experiment("local").await;
    let run = app.create_run(&exp).await;
    let (_, v) = app.get("/runs/get", &[("run_id", &run)]).await;
    let uri = v["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(uri.starts_with("file:///"), "{uri}");
    let r = app
        .client
        .post(app.url("/ajax-api/2.0/mlflow/upload-artifact"))
        .query(&[("run_uuid", run.as_str()), ("path", "plots/dog+step+1.png")])
        .body("png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let on_disk =
        std::path::PathBuf::from(uri.strip_prefix("file://").unwrap()).join("plots/dog+step+1.png");
    assert_eq!(std::fs::read(&on_disk).unwrap(), b"png");
    let (s, v) = app
        .get("/artifacts/list", &[("run_id", &run), ("path", "plots")])
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["files"][0]["path"], "plots/dog+step+1.png");
    let r = app
        .client
        .get(app.url("/get-artifact"))
        .query(&[("run_id", run.as_str()), ("path", "plots/dog+step+1.png")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=dog+step+1.png"
    );
    // A logged model's files, under the same root.
    let (_, v) = app
        .post(
            "/logged-models",
            serde_json::json!({"experiment_id": exp, "source_run_id": "not-stored-here"}),
        )
        .await;
    let model = &v["model"]["info"];
    assert_eq!(model["source_run_id"], "not-stored-here");
    let id = model["model_id"].as_str().unwrap().to_string();
    let dir = std::path::PathBuf::from(
        model["artifact_uri"]
            .as_str()
            .unwrap()
            .strip_prefix("file://")
            .unwrap(),
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("MLmodel"), format!("model_id: {id}\n")).unwrap();
    let (s, v) = app
        .get(&format!("/logged-models/{id}/artifacts/directories"), &[])
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["files"][0]["path"], "MLmodel");
    let r = app
        .client
        .get(app.url(&format!(
            "/ajax-api/2.0/mlflow/logged-models/{id}/artifacts/files"
        )))
        .query(&[("artifact_file_path", "MLmodel")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains(&id));
    // Outside the root stays out of reach.
    let (s, _) = app
        .get(
            &format!("/logged-models/{id}/artifacts/directories"),
            &[("artifact_directory_path", "../../..")],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

on_both_backends!(
    a_local_default_root_is_served,
    a_local_default_root_is_served
);

/// Logged models get distinct default names, and deleting a tag that is not there is a 404
/// (MLflow's client raises on it).
async fn logged_model_names_and_missing_tags(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("lm").await;
    let mut names = Vec::new();
    for _ in 0..3 {
        let (_, v) = app
            .post("/logged-models", serde_json::json!({"experiment_id": exp}))
            .await;
        names.push(v["model"]["info"]["name"].as_str().unwrap().to_string());
    }
    let id = {
        let (_, v) = app
            .post("/logged-models", serde_json::json!({"experiment_id": exp}))
            .await;
        v["model"]["info"]["model_id"].as_str().unwrap().to_string()
    };
    names.sort();
    names.dedup();
    assert!(names.len() >= 2, "default names repeat: {names:?}");
    let r = app
        .client
        .delete(app.url(&format!("/api/2.0/mlflow/logged-models/{id}/tags/nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("No tag with key"),
        "{v}"
    );
}

on_both_backends!(
    logged_model_names_and_missing_tags,
    logged_model_names_and_missing_tags
);

/// MLflow 3's logged-model links: a run's model inputs, a search by the dataset a model's
/// metric was logged against, and a version registered from the model's (local) folder, which
/// the model then lists in its `mlflow.modelVersions` tag as MLflow writes it.
async fn logged_model_inputs_datasets_and_versions(db: Db) {
    use serde_json::json;
    let app = spawn_app_with(db, &["--default-artifact-root", "file://{dir}/local-root"]).await;
    let exp = app.create_experiment("lm-links").await;
    let run = app.create_run(&exp).await;
    let mut models = Vec::new();
    for _ in 0..2 {
        let (_, v) = app
            .post("/logged-models", json!({"experiment_id": exp}))
            .await;
        models.push(v["model"]["info"].clone());
    }
    let id = models[0]["model_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .post(
            "/runs/log-inputs",
            json!({"run_id": run, "models": [{"model_id": id}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.get("/runs/get", &[("run_id", &run)]).await;
    assert_eq!(
        v["run"]["inputs"]["model_inputs"],
        json!([{"model_id": id}])
    );
    let (s, _) = app
        .post(
            "/runs/log-metric",
            json!({"run_id": run, "key": "auc", "value": 0.8, "timestamp": 1, "step": 0,
                   "model_id": id, "dataset_name": "holdout", "dataset_digest": "abc"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for (digest, expected) in [("abc", 1), ("zzz", 0)] {
        let (s, v) = app
            .post(
                "/logged-models/search",
                json!({"experiment_ids": [exp], "datasets": [{"dataset_name": "holdout", "dataset_digest": digest}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let found = v["models"].as_array().map_or(0, Vec::len);
        assert_eq!(found, expected, "{digest}: {v}");
        if expected == 1 {
            assert_eq!(v["models"][0]["info"]["model_id"], id.as_str());
        }
    }
    app.post("/registered-models/create", json!({"name": "model"}))
        .await;
    let location = models[0]["artifact_uri"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": "model", "source": location, "model_id": id}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, v) = app.get(&format!("/logged-models/{id}"), &[]).await;
    let tag = v["model"]["info"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "mlflow.modelVersions")
        .unwrap()["value"]
        .clone();
    assert_eq!(
        tag,
        r#"[{"name": "model", "version": 1}, {"name": "model", "version": 2}]"#
    );
    // The other model's folder is not this model's.
    let other = models[1]["artifact_uri"].as_str().unwrap();
    let (s, _) = app
        .post(
            "/model-versions/create",
            json!({"name": "model", "source": other, "model_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

on_both_backends!(
    logged_model_inputs_datasets_and_versions,
    logged_model_inputs_datasets_and_versions
);
