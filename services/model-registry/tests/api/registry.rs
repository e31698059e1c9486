use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, Db};
use crate::on_both_backends;

async fn concurrent_registrations_get_distinct_consecutive_versions(db: Db) {
    let app = std::sync::Arc::new(spawn_app(db).await);
    let (s, _) = app
        .post("/registered-models/create", json!({"name": "loan-default"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let exp = app.create_experiment("e").await;
    let run = app.create_run(&exp).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let (s, v) = app.post("/model-versions/create", json!({"name": "loan-default", "source": format!("runs:/{run}/model"), "run_id": run})).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                assert_eq!(v["model_version"]["status"], "READY");
                v["model_version"]["version"].as_str().unwrap().parse::<i64>().unwrap()
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
}
on_both_backends!(
    concurrent_registrations_get_distinct_consecutive_versions,
    concurrent_registrations_get_distinct_consecutive_versions
);

async fn aliases_stages_and_errors(db: Db) {
    let app = spawn_app(db).await;
    app.model_with_versions("m", 2).await;
    let (s, _) = app
        .post(
            "/registered-models/alias",
            json!({"name": "m", "alias": "champion", "version": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = app
        .get(
            "/registered-models/alias",
            &[("name", "m"), ("alias", "champion")],
        )
        .await;
    assert_eq!(v["model_version"]["version"], "1");
    assert_eq!(v["model_version"]["aliases"], json!(["champion"]));
    let (s, v) = app
        .get(
            "/registered-models/alias",
            &[("name", "m"), ("alias", "missing")],
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE"))
    );
    for reserved in ["latest", "v3", "V12"] {
        let (s, _) = app
            .post(
                "/registered-models/alias",
                json!({"name": "m", "alias": reserved, "version": "1"}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{reserved}");
    }
    let (s, v) = app.post("/model-versions/transition-stage", json!({"name": "m", "version": "2", "stage": "production", "archive_existing_versions": true})).await;
    assert_eq!(
        (s, v["model_version"]["current_stage"].as_str()),
        (StatusCode::OK, Some("Production"))
    );
    let (s, _) = app
        .post(
            "/model-versions/transition-stage",
            json!({"name": "m", "version": "2", "stage": "Live"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = app
        .post(
            "/registered-models/get-latest-versions",
            json!({"name": "m", "stages": ["Production"]}),
        )
        .await;
    assert_eq!(v["model_versions"][0]["version"], "2");
    let (_, v) = app.get("/registered-models/get", &[("name", "m")]).await;
    assert_eq!(
        v["registered_model"]["aliases"],
        json!([{"alias": "champion", "version": "1"}])
    );
    let (s, v) = app.get("/registered-models/get", &[("name", "nope")]).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (s, v) = app
        .post("/registered-models/create", json!({"name": "m"}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("RESOURCE_ALREADY_EXISTS"))
    );
    // The prompt-hiding filter the client adds must not hide ordinary models.
    let (_, v) = app
        .get(
            "/registered-models/search",
            &[("filter", "tags.`mlflow.prompt.is_prompt` != 'true'")],
        )
        .await;
    assert_eq!(v["registered_models"][0]["name"], "m");
}
on_both_backends!(aliases_stages_and_errors, aliases_stages_and_errors);

/// MLflow's own SQLAlchemy store can write to the server's database (MLflow's suites open the
/// server's SQLite file with `MlflowClient`): its tables, columns and NULLs, as MLflow 3.17
/// writes them, are served, and the server numbers its next version after MLflow's.
async fn versions_written_by_mlflows_own_store_are_served(db: Db) {
    let app = spawn_app(db).await;
    let (pool, _) = model_registry::store::connect(&app.db_url).await.unwrap();
    // The statements MLflow 3.17.2's registry store sends (its SQL log), with its NULLs.
    sqlx::query(
        "INSERT INTO registered_models (workspace, name, creation_time, last_updated_time, description) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind("default")
    .bind("from-mlflow")
    .bind(1_000_i64)
    .bind(1_000_i64)
    .bind(None::<String>)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO model_versions (workspace, name, version, creation_time, last_updated_time, \
         description, user_id, current_stage, source, storage_location, run_id, run_link, status, \
         status_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind("default")
    .bind("from-mlflow")
    .bind(1_i64)
    .bind(2_000_i64)
    .bind(2_000_i64)
    .bind(None::<String>)
    .bind(None::<String>)
    .bind("None")
    .bind("mlflow-artifacts:/x/model")
    .bind("mlflow-artifacts:/x/model")
    .bind("run-1")
    .bind(None::<String>)
    .bind("READY")
    .bind(None::<String>)
    .execute(&pool)
    .await
    .unwrap();
    // MLflow's store checks that the schema is at its head before it writes anything.
    let head: String = sqlx::query_scalar("SELECT version_num FROM alembic_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(head, "dc11669786a5");

    let (s, v) = app
        .get(
            "/model-versions/get",
            &[("name", "from-mlflow"), ("version", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mv = &v["model_version"];
    assert_eq!(mv["source"], "mlflow-artifacts:/x/model");
    assert_eq!(mv["run_id"], "run-1");
    assert_eq!(mv["creation_timestamp"], 2_000);
    assert_eq!(mv["current_stage"], "None");
    let (s, v) = app
        .get("/registered-models/get", &[("name", "from-mlflow")])
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registered_model"]["creation_timestamp"], 1_000);

    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "from-mlflow", "source": "mlflow-artifacts:/x/model2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model_version"]["version"], "2");
    // What the server writes, MLflow's store reads: its own column names.
    let (source, location): (String, String) = sqlx::query_as(
        "SELECT source, storage_location FROM model_versions WHERE name = $1 AND version = 2",
    )
    .bind("from-mlflow")
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(source, "mlflow-artifacts:/x/model2");
    assert_eq!(location, source);
}
on_both_backends!(
    versions_written_by_mlflows_own_store_are_served,
    versions_written_by_mlflows_own_store_are_served
);

/// A registry made before MLflow's column names (migration 0005) keeps its models, versions,
/// tags, aliases and version numbering when upgraded.
#[tokio::test]
async fn a_registry_from_before_mlflows_schema_is_upgraded_with_its_versions() {
    use model_registry::store::{self, registry};
    let dir = std::env::temp_dir().join(format!("registry-up-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join("registry.db")).unwrap();
    let stores = [
        (
            test_support::fresh_postgres("registry_upgrade").await,
            sqlx::migrate!("./migrations/postgres"),
        ),
        (
            store::sqlite_url(&dir.join("registry.db")),
            sqlx::migrate!("./migrations/sqlite"),
        ),
    ];
    for (url, mut before) in stores {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        before.migrations = before.migrations[..4].to_vec().into();
        before.run(&pool).await.unwrap();
        for sql in [
            "INSERT INTO registered_models (name, creation_timestamp, last_updated_timestamp, \
             description, last_version) VALUES ('loan', 10, 20, 'the model', 3)",
            "INSERT INTO model_versions (name, version, creation_timestamp, last_updated_timestamp, \
             description, user_id, current_stage, source, run_id, run_link, status, model_id) \
             VALUES ('loan', 3, 30, 40, 'v3', 'ann', 'Production', 'mlflow-artifacts:/1/m', 'r1', \
             '', 'READY', 'm-1')",
            "INSERT INTO model_version_tags (name, version, key, value) VALUES ('loan', 3, 'k', 'v')",
            "INSERT INTO registered_model_aliases (name, alias, version) VALUES ('loan', 'champion', 3)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let (pool, _) = store::connect(&url).await.unwrap();
        let m = registry::get_registered_model(&pool, "loan").await.unwrap();
        assert_eq!(
            (m.creation_timestamp, m.last_updated_timestamp),
            (10, 20),
            "{url}"
        );
        assert_eq!(m.description, "the model", "{url}");
        let v = registry::get_model_version(&pool, "loan", 3).await.unwrap();
        assert_eq!(
            (
                v.creation_timestamp,
                v.last_updated_timestamp,
                v.description.as_str()
            ),
            (30, 40, "v3"),
            "{url}"
        );
        assert_eq!(
            (
                v.user_id.as_str(),
                v.current_stage.as_str(),
                v.source.as_str()
            ),
            ("ann", "Production", "mlflow-artifacts:/1/m"),
            "{url}"
        );
        assert_eq!(v.model_id.as_deref(), Some("m-1"), "{url}");
        assert_eq!(v.tags, vec![("k".to_string(), "v".to_string())], "{url}");
        assert_eq!(v.aliases, vec!["champion".to_string()], "{url}");
        let location: String =
            sqlx::query_scalar("SELECT storage_location FROM model_versions WHERE name = 'loan'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(location, "mlflow-artifacts:/1/m", "{url}");
        // Versions 1 and 2 were deleted before the upgrade: numbering goes on from 3.
        let next = registry::insert_model_version(
            &pool,
            registry::NewVersion {
                name: "loan",
                source: "mlflow-artifacts:/1/n",
                storage_location: "mlflow-artifacts:/1/n",
                run_id: "",
                run_link: "",
                description: "",
                model_id: None,
                tags: &[],
            },
        )
        .await
        .unwrap();
        assert_eq!(next.version, 4, "{url}");
    }
}

/// Version sources are checked as `mlflow server` 3.17 checks them (see `check_source`).
async fn version_sources_outside_the_store_are_refused(db: Db) {
    let app = spawn_app(db).await;
    app.post("/registered-models/create", json!({"name": "m"}))
        .await;
    let exp = app.create_experiment("e").await;
    let run = app.create_run(&exp).await;
    for source in [
        "file:///etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "../../../etc".to_string(),
        "mlflow-artifacts:/../../etc".to_string(),
        format!("runs:/{run}/../../../etc"),
        format!("runs:/{run}/model#frag"),
        "models:/m-0000/../x".to_string(),
        "s3://bucket/a/%2e%2e/key".to_string(),
        // A local path inside the run's folder, but the run's artifacts are on this server's
        // store, not local: refused as MLflow refuses it.
        format!("file:///tmp/{run}/artifacts/model"),
    ] {
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": "m", "source": source, "run_id": run}),
            )
            .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{source}: {s} {v}"
        );
    }
    // A file URI with a host: refused with MLflow's status (500) and message.
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "m", "source": "file://123.45.67.89/path/to/source", "run_id": run}),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["error_code"], "INTERNAL_ERROR");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("is not a valid remote uri"),
        "{v}"
    );
    // Sources elsewhere are recorded as MLflow records them; the server never reads them and
    // the platform's client downloads only from this server's store.
    for (i, source) in ["s3://bucket/key", "http://169.254.169.254/latest"]
        .iter()
        .enumerate()
    {
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": "m", "source": source}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{source}: {v}");
        let (_, v) = app
            .get(
                "/model-versions/get-download-uri",
                &[("name", "m"), ("version", &(i + 1).to_string())],
            )
            .await;
        assert_eq!(v["artifact_uri"], *source);
    }
    // A runs:/ source names its run; the run need not be stored here (MLflow 3.17 does not
    // look), but a different run_id in the request is refused.
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "m", "source": "runs:/elsewhere/model"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model_version"]["run_id"], "elsewhere");
    // A logged-model source needs its model_id, and the version records the model's run.
    let (_, v) = app
        .post(
            "/logged-models",
            json!({"experiment_id": exp, "name": "model", "source_run_id": run}),
        )
        .await;
    let id = v["model"]["info"]["model_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(
            "/model-versions/create",
            json!({"name": "m", "source": format!("models:/{id}")}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "m", "source": format!("models:/{id}"), "model_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model_version"]["version"], "4");
    assert_eq!(v["model_version"]["run_id"], run.as_str());
    let (_, v) = app
        .get(
            "/model-versions/search",
            &[("filter", &format!("run_id = '{run}'"))],
        )
        .await;
    assert_eq!(v["model_versions"][0]["version"], "4", "{v}");
    let (_, v) = app
        .get(
            "/model-versions/get-download-uri",
            &[("name", "m"), ("version", "4")],
        )
        .await;
    assert_eq!(
        v["artifact_uri"],
        format!("mlflow-artifacts:/{exp}/models/{id}/artifacts")
    );
}
on_both_backends!(
    version_sources_outside_the_store_are_refused,
    version_sources_outside_the_store_are_refused
);

/// With no `order_by`, versions come most recently updated first, as in MLflow.
async fn versions_search_defaults_to_most_recently_updated(db: Db) {
    let app = spawn_app(db).await;
    for name in ["b", "a"] {
        app.post("/registered-models/create", json!({"name": name}))
            .await;
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": name, "source": "mlflow-artifacts:/0/x/artifacts/model"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = app
        .client
        .patch(app.url("/api/2.0/mlflow/model-versions/update"))
        .json(&json!({"name": "b", "version": "1", "description": "touched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = app.get("/model-versions/search", &[]).await;
    let names: Vec<&str> = v["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a"], "{v}");
}
on_both_backends!(
    versions_search_defaults_to_most_recently_updated,
    versions_search_defaults_to_most_recently_updated
);
