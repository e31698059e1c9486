//! A model bundle document (what the API and workers download from the registry). Properties:
//! no panic, no endless loop; a bundle that loads builds a scorer, and that scorer scores an
//! application made of each feature's first category or lower bound without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bundle) = model::Bundle::from_json(text) else {
        return;
    };
    let values: Vec<serde_json::Value> = bundle
        .spec
        .features
        .iter()
        .map(|f| {
            let v = serde_json::to_value(f).unwrap_or_default();
            if let Some(c) = v["categories"].as_array().and_then(|c| c.first()) {
                c.clone()
            } else if let Some(min) = v["min"].as_f64() {
                serde_json::json!(min)
            } else {
                serde_json::Value::Null
            }
        })
        .collect();
    let Ok(scorer) = model::Scorer::new(bundle) else {
        return;
    };
    let record: Vec<features::Raw<'_>> = values.iter().map(features::Raw::from_json).collect();
    if let Ok(score) = scorer.score(&record, true) {
        assert!((0.0..=1.0).contains(&score.default_probability));
    }
});
