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
                    let Some((page, more)) =
                        runs::search_page(&pool, backend, &exps, view, &clauses, &order, offset, 7)
                            .await
                            .unwrap()
                    else {
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
