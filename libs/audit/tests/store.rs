//! The audit store on real PostgreSQL and SQLite, and the writer's queue and shutdown drain.

use std::time::Duration;

use audit::{Auditor, Mode, Page, Record, Settings, Store};

fn record(id: &str, request: &str, row: i64, at: i64) -> Record {
    Record {
        decision_id: id.into(),
        request_id: request.into(),
        row_index: row,
        recorded_at_ms: at,
        source: "predict".into(),
        key_id: Some("team-a".into()),
        model_name: "loan".into(),
        model_version: "3".into(),
        bundle_sha256: "ab".repeat(32),
        features: r#"{"amount":1234.5,"purpose":"car"}"#.into(),
        probability: 0.1 + 0.2,
        decision: "review".into(),
        thresholds: r#"{"approve":0.2,"decline":0.5}"#.into(),
        reason_policy: "all".into(),
        reasons: "[]".into(),
        shadow: None,
    }
}

async fn urls() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap().keep();
    vec![
        test_support::fresh_postgres("audit_store").await,
        format!("sqlite:{}/nested/audit.db", dir.display()),
    ]
}

#[tokio::test]
async fn records_round_trip_bit_for_bit_and_a_redelivered_row_is_written_once() {
    for url in urls().await {
        let store = Store::connect(&url).await.unwrap();
        let a = record("d1", "r1", 0, 1_000);
        let b = record("job:2", "job", 2, 2_000);
        assert_eq!(
            store.insert(&[a.clone(), b.clone()]).await.unwrap(),
            2,
            "{url}"
        );
        // The same chunk again (a redelivery): nothing new.
        assert_eq!(
            store.insert(std::slice::from_ref(&b)).await.unwrap(),
            0,
            "{url}"
        );
        let got = store.by_request("r1").await.unwrap();
        assert_eq!(got, vec![a.clone()], "{url}");
        assert_eq!(got[0].probability.to_bits(), (0.1f64 + 0.2).to_bits());
        let all = store
            .page(&Page {
                limit: 10,
                ..Page::default()
            })
            .await
            .unwrap();
        assert_eq!(all, vec![a, b], "{url}");
    }
}

#[tokio::test]
async fn pages_follow_time_order_and_sweep_and_erase_delete() {
    for url in urls().await {
        let store = Store::connect(&url).await.unwrap();
        let records: Vec<Record> = (0..7)
            .map(|i| {
                record(
                    &format!("d{i}"),
                    &format!("r{}", i % 3),
                    0,
                    1_000 + i64::from(i),
                )
            })
            .collect();
        store.insert(&records).await.unwrap();
        let mut seen = Vec::new();
        let mut page = Page {
            since_ms: Some(1_001),
            until_ms: Some(1_006),
            limit: 2,
            ..Page::default()
        };
        loop {
            let got = store.page(&page).await.unwrap();
            let Some(last) = got.last() else { break };
            page.after = Some((last.recorded_at_ms, last.decision_id.clone()));
            seen.extend(got.into_iter().map(|r| r.decision_id));
        }
        assert_eq!(seen, ["d1", "d2", "d3", "d4", "d5"], "{url}");
        let only = store
            .page(&Page {
                request_id: Some("r1".into()),
                limit: 10,
                ..Page::default()
            })
            .await
            .unwrap();
        assert_eq!(only.len(), 2, "{url}");
        assert_eq!(store.erase("r1").await.unwrap(), 2, "{url}");
        assert!(store.by_request("r1").await.unwrap().is_empty());
        assert_eq!(
            store.sweep(1_003).await.unwrap(),
            2,
            "{url}: d0 and d2 are older"
        );
        assert_eq!(store.sweep(1_003).await.unwrap(), 0);
    }
}

fn settings(mode: Mode, queue: usize) -> Settings {
    Settings {
        url: None,
        mode,
        retention_days: 0,
        queue,
    }
}

async fn wait_healthy(a: &Auditor) {
    for _ in 0..100 {
        if a.healthy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the auditor never reached its store");
}

#[tokio::test]
async fn shutdown_drains_every_queued_record() {
    let url = test_support::fresh_postgres("audit_drain").await;
    let auditor = Auditor::start(&settings(Mode::FailClosed, 100_000), url.clone());
    wait_healthy(&auditor).await;
    let n = 20_000;
    auditor
        .record((0..n).map(|i| record(&format!("d{i}"), "burst", i, i)))
        .unwrap();
    auditor.shutdown(Duration::from_secs(60)).await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.by_request("burst").await.unwrap().len(), n as usize);
}

#[tokio::test]
async fn fail_closed_refuses_while_the_store_is_unreachable_and_fail_open_counts_drops() {
    // Nothing listens on port 9 of loopback.
    let down = "postgres://postgres@127.0.0.1:9/none".to_string();
    let closed = Auditor::start(&settings(Mode::FailClosed, 10), down.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!closed.healthy());
    assert!(closed.admit().is_err(), "no decision without a record");

    let open = Auditor::start(&settings(Mode::FailOpen, 2), down);
    assert!(open.admit().is_ok());
    let before = audit::dropped_total();
    open.record((0..5).map(|i| record(&format!("o{i}"), "open", i, i)))
        .unwrap();
    assert_eq!(
        audit::dropped_total() - before,
        3,
        "a queue of 2 keeps 2 of 5"
    );
}

#[tokio::test]
async fn new_records_are_copied_exactly_and_a_repeated_id_is_skipped() {
    for url in urls().await {
        let store = Store::connect(&url).await.unwrap();
        let mut odd = record("c1", "tab\there", 0, 5);
        odd.features = "{\"purpose\":\"a\\\\b\\tc\\nd\\re \u{e9}\"}".into();
        odd.key_id = None;
        odd.shadow = Some("{\"p\":1e-7}".into());
        odd.probability = 1.0e-7 / 3.0;
        let plain = record("c2", "r", 1, 6);
        assert_eq!(
            store
                .insert_new(&[odd.clone(), plain.clone()])
                .await
                .unwrap(),
            2,
            "{url}"
        );
        assert_eq!(
            store.by_request("tab\there").await.unwrap(),
            vec![odd.clone()],
            "{url}"
        );
        // An id already stored: nothing is lost and nothing is written twice.
        let fresh = record("c3", "r", 2, 7);
        assert_eq!(
            store
                .insert_new(&[plain.clone(), fresh.clone()])
                .await
                .unwrap(),
            1,
            "{url}"
        );
        assert_eq!(
            store.by_request("r").await.unwrap(),
            vec![plain, fresh],
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_retention_sweeper_deletes_old_records_once_the_store_is_reached() {
    let url = test_support::fresh_postgres("audit_sweep").await;
    let store = Store::connect(&url).await.unwrap();
    let now = audit::now_ms();
    store
        .insert(&[record("old", "r", 0, 1_000), record("new", "r", 1, now)])
        .await
        .unwrap();
    let auditor = Auditor::start(&settings(Mode::FailClosed, 10), url);
    tokio::spawn(audit::sweep_forever(auditor, 1));
    let mut left = Vec::new();
    for _ in 0..100 {
        left = store.by_request("r").await.unwrap();
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left.iter()
            .map(|r| r.decision_id.as_str())
            .collect::<Vec<_>>(),
        ["new"],
        "a record past the one-day retention goes, today's stays"
    );
}

/// A store made before the request key (migration 0002) keeps its records when upgraded, and
/// the new key takes over both of the old indexes' jobs.
#[tokio::test]
async fn a_store_from_the_first_schema_is_upgraded_with_its_records() {
    let dir = tempfile::tempdir().unwrap().keep();
    let stores = [
        (
            test_support::fresh_postgres("audit_upgrade").await,
            sqlx::migrate!("./migrations/postgres"),
        ),
        (
            format!("sqlite:{}/audit.db?mode=rwc", dir.display()),
            sqlx::migrate!("./migrations/sqlite"),
        ),
    ];
    for (url, mut first) in stores {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        first.migrations = first.migrations[..1].to_vec().into();
        first.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO decisions (decision_id, request_id, row_index, recorded_at_ms, source, \
             model_name, model_version, bundle_sha256, features, probability, decision, \
             thresholds, reason_policy, reasons) VALUES ('job:4', 'job', 4, 7, 'job', 'loan', \
             '3', 'ab', '{}', 0.25, 'approve', '{}', 'none', '[]')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::connect(&url).await.unwrap();
        let kept = store.by_request("job").await.unwrap();
        assert_eq!(kept.len(), 1, "{url}");
        assert_eq!(kept[0].decision_id, "job:4", "{url}");
        // The kept row is redelivered with a new one: only the new one is written.
        let again = record("job:4", "job", 4, 7);
        let next = record("job:5", "job", 5, 8);
        assert_eq!(store.insert(&[again, next]).await.unwrap(), 1, "{url}");
        assert_eq!(store.by_request("job").await.unwrap().len(), 2, "{url}");
    }
}
