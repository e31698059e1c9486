//! Bounded memory under hostile batch bodies, measured on the real binary's peak RSS.

use crate::helpers::spawn_binary;

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib / 1024.0
}

/// A body of exactly `size` bytes: `{"applications":[` + `item,` repeated + `item]}`.
fn body_of(item: &str, size: usize) -> (Vec<u8>, usize) {
    let head = br#"{"applications":["#;
    let tail = b"]}";
    let mut body = head.to_vec();
    let mut count = 0;
    while body.len() + item.len() + 1 + tail.len() <= size {
        body.extend_from_slice(item.as_bytes());
        body.push(b',');
        count += 1;
    }
    body.pop();
    body.extend_from_slice(tail);
    (body, count)
}

/// The largest batch bodies (16 × `API_MAX_BODY_BYTES` = 16 MiB by default) shaped to cost the
/// most: millions of tiny values, one huge application, thousands of unknown fields. Before the
/// body was read without a `serde_json::Value` tree, the first cost about half a gigabyte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximal_batch_bodies_keep_the_api_under_100_mib() {
    let (child, port) = spawn_binary(&[]).await;
    let url = format!("http://127.0.0.1:{port}/v1/predict/batch");
    let limit = 16 << 20;
    let client = reqwest::Client::new();
    let (zeros, _) = body_of("0", limit);
    let feature = &test_support::german_spec().features[0].name;
    let mut one_huge = format!(r#"{{"applications":[{{"{feature}":["#).into_bytes();
    while one_huge.len() + 8 < limit {
        one_huge.extend_from_slice(b"0,");
    }
    one_huge.extend_from_slice(b"0]}]}");
    // The most applications allowed (API_MAX_BATCH, 1,000), each filling its share of the
    // body with unknown fields.
    let unknown: String = {
        let fields: Vec<String> = (0..1_524).map(|i| format!(r#""f{i:05}":0"#)).collect();
        format!("{{{}}}", fields.join(","))
    };
    let (many_unknown, count) = body_of(&unknown, limit);
    assert_eq!(count, 1_000);
    for (name, body, want) in [
        ("[0,0,…]", zeros, 422),
        ("one application with a 16 MiB field", one_huge, 200),
        ("applications full of unknown fields", many_unknown, 200),
    ] {
        assert!(body.len() <= limit, "{name}");
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, want, "{name}: {}", &text[..text.len().min(300)]);
        let peak = peak_rss_mib(child.0.id());
        println!("after {name}: peak RSS {peak:.1} MiB");
        assert!(peak < 100.0, "{name}: peak RSS {peak:.1} MiB");
    }
}
