//! Searches the database answers mean what the in-memory search means: for many filters and
//! orders over awkward data (NaN, infinities, missing values, mixed case, wildcard characters,
//! non-ASCII text), every page of `runs::search_page` equals the page `search::select` cuts out
//! of fully loaded runs, on SQLite and on PostgreSQL.

use model_registry::search::{self, Entity};
use model_registry::store::{self, experiments, runs, View};

use crate::helpers::Db;
use crate::on_both_backends;

async fn pool(db: Db) -> (store::Pool, store::Backend) {
    let url = match db {
        Db::Sqlite => {
            let dir =
                std::env::temp_dir().join(format!("search-test-{}", uuid::Uuid::new_v4().simple()));
            store::sqlite_url(&dir.join("s.db"))
        }
        Db::Postgres => test_support::fresh_postgres("search_test").await,
    };
    store::connect(&url).await.unwrap()
}

fn metric(key: &str, value: f64, step: i64) -> runs::MetricIn {
    runs::MetricIn {
        key: key.into(),
        value,
        timestamp: 1_000 + step,
        step,
        model_id: None,
        dataset_name: None,
        dataset_digest: None,
    }
}

/// 60 runs in two experiments; some deleted, some finished.
async fn fill(pool: &store::Pool) -> Vec<i64> {
    let a = experiments::insert_experiment(pool, "a", None, "file:///tmp/a", &[])
        .await
        .unwrap();
    let b = experiments::insert_experiment(pool, "b", None, "file:///tmp/b", &[])
        .await
        .unwrap();
    let names = [
        "alpha", "Alpha", "beta_1", "b%ta", "gam*ma", "Éclair", "éclair", "zeta",
    ];
    for i in 0..60i64 {
        let exp = if i % 3 == 0 { b } else { a };
        let name = format!("{}-{}", names[i as usize % names.len()], i % 7);
        // Equal start times for some runs, so the run_id tie-break matters.
        let run = runs::insert_run(pool, exp, Some(name), "u", 10_000 + (i % 13), &[])
            .await
            .unwrap();
        let mut metrics = Vec::new();
        match i % 6 {
            0 => {}
            1 => metrics.push(metric("auc", f64::NAN, 0)),
            2 => metrics.push(metric("auc", f64::INFINITY, 0)),
            _ => metrics.push(metric("auc", 0.5 + (i % 11) as f64 * 0.05, 0)),
        }
        if i % 4 == 0 {
            metrics.push(metric("loss", -(i as f64) / 10.0, 1));
        }
        let mut params = vec![("depth".to_string(), (i % 5).to_string())];
        if i % 2 == 0 {
            params.push(("lr".into(), format!("0.{}", i % 9)));
        }
        let tags = vec![(
            "owner".to_string(),
            names[(i as usize * 3) % names.len()].to_string(),
        )];
        runs::log_batch(pool, &run.run_id, &metrics, &params, &tags)
            .await
            .unwrap();
        if i % 5 == 0 {
            runs::update_run(pool, &run.run_id, Some("FINISHED"), Some(20_000 + i), None)
                .await
                .unwrap();
        }
        if i % 9 == 0 {
            runs::set_run_stage(pool, &run.run_id, "deleted")
                .await
                .unwrap();
        }
    }
    vec![a, b]
}

const FILTERS: &[&str] = &[
    "",
    "metrics.auc > 0.75",
    "metrics.auc >= 0.75 and params.depth = '3'",
    "metrics.auc != 0.6",
    "metrics.auc != 0.5",
    "metrics.auc < 1e999",
    "metrics.loss <= -1",
    "metrics.auc = 0.7",
    "params.lr IS NULL",
    "params.depth IN ('1', '4')",
    "params.depth NOT IN ('1', '4')",
    "params.lr LIKE '0._'",
    "tags.owner LIKE '%lpha%'",
    "tags.owner ILIKE 'ALPHA%'",
    "tags.owner LIKE 'b%%'",
    "tags.owner LIKE 'A%'",
    "tags.owner LIKE '%*%'",
    "tags.owner ILIKE '%ÉCLAIR%'",
    "tags.owner != 'zeta'",
    "attributes.run_name LIKE 'gam*%'",
    "attributes.run_name > 'b'",
    "attributes.status = 'FINISHED'",
    "attributes.end_time > 20010",
    "attributes.end_time IS NULL",
    "attributes.start_time <= 10005",
    "attributes.start_time != 10003",
    "attributes.run_id != 'x' and metrics.auc > 0.5",
    "attributes.start_time > '10005'",
    "attributes.start_time = 'soon'",
    "attributes.start_time != 'soon'",
];

const ORDERS: &[&[&str]] = &[
    &[],
    &["metrics.auc DESC"],
    &["metrics.auc ASC"],
    &["params.lr DESC", "metrics.loss"],
    &["tags.owner"],
    &["attributes.run_name DESC"],
    &["attributes.end_time"],
    &["attributes.end_time DESC"],
];

async fn sql_search_equals_memory_search(db: Db) {
    let (pool, backend) = pool(db).await;
    let exps = fill(&pool).await;
    let mut pushed = 0;
    for view in [View::ActiveOnly, View::All, View::DeletedOnly] {
        for filter in FILTERS {
            for order_terms in ORDERS {
                let clauses = search::parse_filter(filter, Entity::Runs).unwrap();
                let terms: Vec<String> = order_terms.iter().map(|s| s.to_string()).collect();
                let order =
                    runs::with_tiebreaks(search::parse_order_by(&terms, Entity::Runs).unwrap());
                let all = runs::list_runs(&pool, &exps, view).await.unwrap();
                let (expected, _) =
                    search::select(all, &clauses, &order, None, usize::MAX).unwrap();
                let expected: Vec<String> = expected.into_iter().map(|r| r.run_id).collect();
                let mut got = Vec::new();
                let mut offset = 0;
                loop {
                    let Some((page, more)) = runs::search_page(
                        &mut pool.acquire().await.unwrap(),
                        backend,
                        &exps,
                        view,
                        &clauses,
                        &order,
                        offset,
                        7,
                    )
                    .await
                    .unwrap() else {
                        break;
                    };
                    assert!(page.len() <= 7);
                    offset += page.len();
                    got.extend(page.into_iter().map(|r| r.run_id));
                    if !more {
                        pushed += 1;
                        assert_eq!(
                            got, expected,
                            "{db:?} {view:?} filter {filter:?} order {order_terms:?}"
                        );
                        break;
                    }
                }
            }
        }
    }
    // Only the non-ASCII ILIKE pattern is left to memory, on SQLite.
    let cases = 3 * FILTERS.len() * ORDERS.len();
    let left = match db {
        Db::Sqlite => 1,
        Db::Postgres => 0,
    };
    assert_eq!(pushed, cases - 3 * ORDERS.len() * left);
}

on_both_backends!(
    sql_search_equals_memory_search,
    sql_search_equals_memory_search
);

/// Every page of a search the database answers, 7 at a time; `None` when it left the search to
/// memory.
async fn paged<K>(mut page: impl AsyncFnMut(usize) -> Option<(Vec<K>, bool)>) -> Option<Vec<K>> {
    let mut got = Vec::new();
    loop {
        let (p, more) = page(got.len()).await?;
        assert!(p.len() <= 7);
        got.extend(p);
        if !more {
            return Some(got);
        }
    }
}

const NAMES: &[&str] = &[
    "alpha", "Alpha", "beta_1", "b%ta", "gam*ma", "Éclair", "éclair", "zeta",
];

/// Experiments, registered models, versions and logged models over awkward names and tags,
/// with timestamps that tie, so that the tie-breaks decide.
async fn fill_others(pool: &store::Pool) -> Vec<i64> {
    use model_registry::store::{logged_models, registry};
    let mut exps = Vec::new();
    for i in 0..30usize {
        let name = format!("{}-{i}", NAMES[i % NAMES.len()]);
        let tags: Vec<(String, String)> = if i % 4 == 0 {
            Vec::new()
        } else {
            vec![("owner".into(), NAMES[(i * 3) % NAMES.len()].into())]
        };
        let id = experiments::insert_experiment(pool, &name, None, "file:///tmp/x", &tags)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE experiments SET creation_time = $1, last_update_time = $2 WHERE experiment_id = $3",
        )
        .bind(1_000 + (i % 4) as i64)
        .bind(2_000 + (i % 5) as i64)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        if i % 7 == 3 {
            experiments::set_experiment_stage(pool, id, "deleted")
                .await
                .unwrap();
        }
        exps.push(id);
    }
    for i in 0..20usize {
        let name = format!("{}-{}", NAMES[i % NAMES.len()], i % 3);
        let name = format!("{name}-{i}");
        let tags: Vec<(String, String)> = if i % 3 == 0 {
            Vec::new()
        } else {
            vec![("team".into(), NAMES[(i * 5) % NAMES.len()].into())]
        };
        registry::insert_registered_model(pool, &name, "", &tags)
            .await
            .unwrap();
        for v in 0..(i % 4) {
            let source = format!("s3://bucket/{}/{v}", NAMES[(i + v) % NAMES.len()]);
            let run_id = format!("run{}", (i + v) % 5);
            let vtags: Vec<(String, String)> = if v % 2 == 0 {
                vec![("stage".into(), NAMES[(i + 2 * v) % NAMES.len()].into())]
            } else {
                Vec::new()
            };
            registry::insert_model_version(
                pool,
                registry::NewVersion {
                    name: &name,
                    source: &source,
                    storage_location: &source,
                    run_id: &run_id,
                    run_link: "",
                    description: "",
                    model_id: None,
                    tags: &vtags,
                },
            )
            .await
            .unwrap();
        }
        sqlx::query("UPDATE registered_models SET creation_time = $1, last_updated_time = $2 WHERE name = $3")
            .bind(1_000 + (i % 3) as i64)
            .bind(2_000 + (i % 4) as i64)
            .bind(&name)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE model_versions SET last_updated_time = 3000 + version % 2 WHERE name = $1",
        )
        .bind(&name)
        .execute(pool)
        .await
        .unwrap();
    }
    for i in 0..25usize {
        let exp = exps[i % 3];
        let model_type = (i % 3 != 0).then(|| NAMES[i % NAMES.len()].to_string());
        let source_run = (i % 4 != 0).then(|| format!("run{}", i % 6));
        let params = vec![("depth".to_string(), (i % 5).to_string())];
        let tags: Vec<(String, String)> = if i % 2 == 0 {
            vec![("owner".into(), NAMES[(i * 7) % NAMES.len()].into())]
        } else {
            Vec::new()
        };
        let m = logged_models::insert_logged_model(
            pool,
            exp,
            &format!("{}-{i}", NAMES[(i * 5) % NAMES.len()]),
            model_type,
            source_run,
            &params,
            &tags,
        )
        .await
        .unwrap();
        sqlx::query("UPDATE logged_models SET creation_timestamp_ms = $1 WHERE model_id = $2")
            .bind(1_000 + (i % 3) as i64)
            .bind(&m.model_id)
            .execute(pool)
            .await
            .unwrap();
        if i % 5 == 0 {
            logged_models::set_status(pool, &m.model_id, "LOGGED_MODEL_READY")
                .await
                .unwrap();
        }
    }
    exps
}

const TEXT_FILTERS: &[&str] = &[
    "",
    "name LIKE 'a%'",
    "name ILIKE 'ALPHA%'",
    "attribute.name ILIKE '%ÉCLAIR%'",
    "name LIKE '%*%'",
    "name > 'b'",
    "name != 'zeta-7'",
    "name IN ('alpha-0', 'b%ta-3', 'none')",
    "tags.owner = 'alpha'",
    "tags.owner LIKE 'b%%'",
    "tags.owner != 'zeta'",
    "tags.team ILIKE 'e%'",
    "tags.stage LIKE '%lpha'",
];

/// The registry's searches the database answers mean what the in-memory search means, for
/// experiments, registered models, model versions and logged models.
async fn other_sql_searches_equal_memory_searches(db: Db) {
    use model_registry::search::OrderBy;
    use model_registry::store::{logged_models, registry};
    let (pool, backend) = pool(db).await;
    let exps = fill_others(&pool).await;
    let tiebreak = |mut order: Vec<OrderBy>, field: &str, ascending: bool| {
        order.push(OrderBy {
            field: search::Field::Attribute(field.into()),
            ascending,
        });
        order
    };
    let (mut pushed, mut cases) = (0, 0);

    let filters: Vec<&str> = TEXT_FILTERS
        .iter()
        .copied()
        .filter(|f| !f.contains("team") && !f.contains("stage"))
        .chain([
            "creation_time > 1001",
            "attributes.last_update_time <= 2002",
            "creation_time = '1002'",
            "attribute.experiment_id = '3'",
        ])
        .collect();
    let orders: &[&[&str]] = &[
        &[],
        &["name"],
        &["name DESC"],
        &["creation_time"],
        &["last_update_time DESC"],
        &["experiment_id DESC"],
    ];
    for view in [View::ActiveOnly, View::All, View::DeletedOnly] {
        for filter in &filters {
            for terms in orders {
                let clauses = search::parse_filter(filter, Entity::Experiments).unwrap();
                let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
                let mut order = search::parse_order_by(&terms, Entity::Experiments).unwrap();
                if order.is_empty() {
                    order = tiebreak(order, "creation_time", false);
                }
                let order = tiebreak(order, "experiment_id", true);
                let all = experiments::list_experiments(&pool, view).await.unwrap();
                let (expected, _) =
                    search::select(all, &clauses, &order, None, usize::MAX).unwrap();
                let expected: Vec<i64> = expected.iter().map(|e| e.id).collect();
                cases += 1;
                let got = paged(async |offset| {
                    experiments::search_page(&pool, backend, view, &clauses, &order, offset, 7)
                        .await
                        .unwrap()
                        .map(|(p, more)| (p.iter().map(|e| e.id).collect(), more))
                })
                .await;
                if let Some(got) = got {
                    pushed += 1;
                    assert_eq!(
                        got, expected,
                        "{db:?} experiments {view:?} {filter:?} {terms:?}"
                    );
                }
            }
        }
    }

    let filters: Vec<&str> = TEXT_FILTERS
        .iter()
        .copied()
        .filter(|f| !f.contains("owner") && !f.contains("stage"))
        .chain([
            "creation_timestamp >= 1001",
            "last_updated_timestamp != 2002",
        ])
        .collect();
    let orders: &[&[&str]] = &[
        &[],
        &["name DESC"],
        &["creation_timestamp"],
        &["last_updated_timestamp DESC"],
        &["tags.team"],
    ];
    for filter in &filters {
        for terms in orders {
            let clauses = search::parse_filter(filter, Entity::RegisteredModels).unwrap();
            let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
            let order = search::parse_order_by(&terms, Entity::RegisteredModels).unwrap();
            let order = tiebreak(order, "name", true);
            let all = registry::list_registered_models(&pool).await.unwrap();
            let (expected, _) = search::select(all, &clauses, &order, None, usize::MAX).unwrap();
            let expected: Vec<(String, usize, usize)> = expected
                .iter()
                .map(|m| (m.name.clone(), m.tags.len(), m.latest_versions.len()))
                .collect();
            cases += 1;
            let got = paged(async |offset| {
                registry::search_models_page(&pool, backend, &clauses, &order, offset, 7)
                    .await
                    .unwrap()
                    .map(|(p, more)| {
                        let keys = p
                            .iter()
                            .map(|m| (m.name.clone(), m.tags.len(), m.latest_versions.len()))
                            .collect();
                        (keys, more)
                    })
            })
            .await;
            if let Some(got) = got {
                pushed += 1;
                assert_eq!(got, expected, "{db:?} models {filter:?} {terms:?}");
            }
        }
    }

    let filters: Vec<&str> = TEXT_FILTERS
        .iter()
        .copied()
        .filter(|f| !f.contains("owner") && !f.contains("team"))
        .chain([
            "version_number > 1",
            "run_id = 'run2'",
            "run_id IN ('run1', 'run3')",
            "source_path LIKE 's3://bucket/a%'",
            "current_stage = 'None'",
            "last_updated_timestamp = 3000",
            "tags.stage IS NULL",
        ])
        .collect();
    let orders: &[&[&str]] = &[
        &["last_updated_timestamp DESC"],
        &["name DESC"],
        &["version_number"],
        &["source_path DESC"],
        &["tags.stage"],
    ];
    for filter in &filters {
        for terms in orders {
            let clauses = search::parse_filter(filter, Entity::ModelVersions).unwrap();
            let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
            let order = search::parse_order_by(&terms, Entity::ModelVersions).unwrap();
            let order = tiebreak(tiebreak(order, "name", true), "version_number", false);
            let all = registry::list_model_versions(&pool).await.unwrap();
            let (expected, _) = search::select(all, &clauses, &order, None, usize::MAX).unwrap();
            let expected: Vec<(String, i64, usize)> = expected
                .iter()
                .map(|v| (v.name.clone(), v.version, v.tags.len()))
                .collect();
            cases += 1;
            let got = paged(async |offset| {
                registry::search_versions_page(&pool, backend, &clauses, &order, offset, 7)
                    .await
                    .unwrap()
                    .map(|(p, more)| {
                        let keys = p
                            .iter()
                            .map(|v| (v.name.clone(), v.version, v.tags.len()))
                            .collect();
                        (keys, more)
                    })
            })
            .await;
            if let Some(got) = got {
                pushed += 1;
                assert_eq!(got, expected, "{db:?} versions {filter:?} {terms:?}");
            }
        }
    }

    let filters: Vec<&str> = TEXT_FILTERS
        .iter()
        .copied()
        .filter(|f| !f.contains("team") && !f.contains("stage"))
        .chain([
            "model_type = 'alpha'",
            "model_type IS NULL",
            "model_type != 'zeta'",
            "source_run_id IS NOT NULL",
            "source_run_id LIKE 'run%'",
            "status = 'LOGGED_MODEL_READY'",
            "params.depth = '3'",
            "params.depth IN ('1', '2')",
            "creation_timestamp > 1000",
        ])
        .collect();
    let orders: &[&[&str]] = &[
        &[],
        &["name"],
        &["model_type DESC"],
        &["source_run_id"],
        &["params.depth DESC"],
    ];
    for filter in &filters {
        for terms in orders {
            let clauses = search::parse_filter(filter, Entity::LoggedModels).unwrap();
            let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
            let order = search::parse_order_by(&terms, Entity::LoggedModels).unwrap();
            let order = tiebreak(
                tiebreak(order, "creation_timestamp", false),
                "model_id",
                true,
            );
            let scope = &exps[..2];
            let all = logged_models::list_logged_models(&pool, scope)
                .await
                .unwrap();
            let (expected, _) = search::select(all, &clauses, &order, None, usize::MAX).unwrap();
            let expected: Vec<(String, usize)> = expected
                .iter()
                .map(|m| (m.model_id.clone(), m.params.len()))
                .collect();
            cases += 1;
            let got = paged(async |offset| {
                logged_models::search_page(&pool, backend, scope, &clauses, &order, offset, 7)
                    .await
                    .unwrap()
                    .map(|(p, more)| {
                        let keys = p
                            .iter()
                            .map(|m| (m.model_id.clone(), m.params.len()))
                            .collect();
                        (keys, more)
                    })
            })
            .await;
            if let Some(got) = got {
                pushed += 1;
                assert_eq!(got, expected, "{db:?} logged models {filter:?} {terms:?}");
            }
        }
    }

    // Only the non-ASCII ILIKE pattern is left to memory, on SQLite: once per order for
    // experiments (in three views), models, versions and logged models.
    let left = match db {
        Db::Sqlite => 3 * 6 + 5 + 5 + 5,
        Db::Postgres => 0,
    };
    assert_eq!(pushed, cases - left);
}

on_both_backends!(
    other_sql_searches_equal_memory_searches,
    other_sql_searches_equal_memory_searches
);

/// SQLite binds at most 32,766 values in one statement: a store with more experiments than that
/// is still searched, whether the database answers the search or memory does, and one page can
/// hold all of them.
#[tokio::test]
async fn more_experiments_than_sqlite_binds_at_once_are_searched() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await;
    let (pool, _) = store::connect(&store::sqlite_url(&app.dir.join("registry.db")))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 33000) \
         SELECT 'bulk-' || i, 'file:///tmp/bulk', 'active', i, i FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO experiment_tags (experiment_id, key, value) SELECT experiment_id, 'k', 'v' FROM experiments")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE experiments SET name = 'bulké-7' WHERE name = 'bulk-7'")
        .execute(&pool)
        .await
        .unwrap();
    for (filter, expected) in [
        ("", 33_001),
        ("name LIKE 'bulk-3200%'", 11),
        ("tags.k ILIKE '%V%'", 33_001),
        // Left to memory on SQLite (a non-ASCII ILIKE pattern).
        ("tags.k = 'v' and name ILIKE '%KÉ%'", 1),
    ] {
        let (status, body) = app
            .post(
                "/experiments/search",
                serde_json::json!({"filter": filter, "max_results": 50_000}),
            )
            .await;
        assert_eq!(status, 200, "{filter}: {body}");
        let found = body["experiments"].as_array().map_or(0, Vec::len);
        assert_eq!(found, expected, "{filter}");
    }
}
