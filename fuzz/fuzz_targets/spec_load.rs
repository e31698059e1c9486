//! A feature spec document (what `--spec` and bundles carry). Properties: no panic; an accepted
//! spec round-trips through JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = features::Spec::from_json(text) {
        let again = serde_json::to_string(&spec).unwrap();
        let back = features::Spec::from_json(&again).expect("an accepted spec reloads");
        assert_eq!(serde_json::to_string(&back).unwrap(), again);
    }
});
