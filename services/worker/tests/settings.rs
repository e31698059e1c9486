//! The worker and the API read some of the same variables; each such variable has one flag name.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};

fn flags_by_env(cmd: &clap::Command) -> BTreeMap<String, String> {
    cmd.get_arguments()
        .filter_map(|a| {
            Some((
                a.get_env()?.to_str()?.to_string(),
                a.get_long()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn a_variable_both_services_read_has_the_same_flag_in_each() {
    let api = flags_by_env(&api::Settings::command());
    let worker = flags_by_env(&worker::config::Settings::command());
    let shared: Vec<&String> = api.keys().filter(|k| worker.contains_key(*k)).collect();
    assert!(shared.len() >= 9, "{shared:?}");
    for env in shared {
        assert_eq!(api[env], worker[env], "{env}");
    }
}

#[test]
fn the_worker_still_takes_its_earlier_flag_names() {
    for args in [
        [
            "--job-queue",
            "--job-key-prefix",
            "--worker-concurrency",
            "--job-retention-seconds",
        ],
        [
            "--queue",
            "--key-prefix",
            "--concurrency",
            "--retention-seconds",
        ],
    ] {
        let s = worker::config::Settings::try_parse_from([
            "worker", args[0], "q", args[1], "p:", args[2], "3", args[3], "60",
        ])
        .unwrap();
        assert_eq!(
            (
                s.jobs.job_queue.as_str(),
                s.jobs.job_key_prefix.as_str(),
                s.jobs.worker_concurrency,
                s.jobs.job_retention_seconds
            ),
            ("q", "p:", 3, 60),
            "{args:?}"
        );
    }
}
