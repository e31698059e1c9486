//! Shared by the model crate's integration tests: the bundled German-credit data.

use features::Spec;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data");

/// The spec, every row's cells in spec order, and the labels (true = default).
pub fn german() -> (Spec, Vec<Vec<String>>, Vec<bool>) {
    let spec = Spec::from_json(
        &std::fs::read_to_string(format!("{DATA}/german_credit.spec.json")).unwrap(),
    )
    .unwrap();
    let mut rdr = csv::Reader::from_path(format!("{DATA}/german_credit.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let cols: Vec<usize> = spec
        .features
        .iter()
        .map(|f| headers.iter().position(|h| h == f.name).unwrap())
        .collect();
    let t = headers.iter().position(|h| h == spec.target.name).unwrap();
    let (mut rows, mut y) = (Vec::new(), Vec::new());
    for rec in rdr.records() {
        let rec = rec.unwrap();
        rows.push(cols.iter().map(|&c| rec[c].to_string()).collect());
        y.push(rec[t] == *spec.target.positive);
    }
    (spec, rows, y)
}
