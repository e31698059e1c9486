//! The block scorer (what `loanctl score`, batch jobs and `/v1/predict/batch` use) gives each row
//! exactly what the single-application scorer gives it (from applications or from rows encoded
//! beforehand), explains the rows its policy asks for,
//! rejects bad rows alone, and writes aligned CSV fields.

mod common;
use common::german;

use features::{FeatureError, Raw};
use model::batch::{result_header, Row};
use model::pipeline::{fit, provenance_now, TrainConfig};
use model::train::TrainParams;
use model::{BlockScorer, Columns, Decision, ReasonPolicy, Scorer};

fn scorer() -> (Scorer, Vec<Vec<String>>) {
    let (spec, rows, y) = german();
    let raws: Vec<Vec<Raw>> = rows
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    let cfg = TrainConfig {
        booster: TrainParams {
            trees: 30,
            ..TrainParams::default()
        },
        ..TrainConfig::default()
    };
    let fitted = fit(&spec, &raws, &y, &cfg, provenance_now(), &mut |_| {}).unwrap();
    (Scorer::new(fitted.bundle).unwrap(), rows)
}

#[test]
fn every_row_scores_as_the_single_scorer_scores_it_under_each_policy() {
    let (scorer, rows) = scorer();
    let rows = &rows[..300];
    let mut seen = [false; 3];
    for policy in [ReasonPolicy::All, ReasonPolicy::Adverse, ReasonPolicy::None] {
        let mut block = BlockScorer::new(&scorer, policy);
        block.score(rows.len(), |i, raws| {
            raws.extend(rows[i].iter().map(|c| Raw::from_cell(c)));
            Ok(())
        });
        assert_eq!(block.len(), rows.len());
        for (i, row) in rows.iter().enumerate() {
            let raws: Vec<Raw> = row.iter().map(|c| Raw::from_cell(c)).collect();
            let single = scorer.score(&raws, true).unwrap();
            let Row::Scored {
                probability,
                decision,
                reasons,
            } = block.row(i)
            else {
                panic!("row {i} rejected");
            };
            assert_eq!(probability.to_bits(), single.default_probability.to_bits());
            assert_eq!(decision, single.decision);
            seen[decision as usize % 3] = true;
            let names: Vec<&str> = reasons
                .iter()
                .map(|(j, _)| scorer.bundle().spec.features[*j].name.as_str())
                .collect();
            let want: Vec<&str> = if policy.explains(decision) {
                single.reasons.iter().map(|r| r.feature.as_str()).collect()
            } else {
                Vec::new()
            };
            assert_eq!(names, want, "row {i} under {policy}");
            for ((j, c), r) in reasons.iter().zip(&single.reasons) {
                assert_eq!(scorer.reason(*j, *c, &raws), *r);
            }
        }
        // The same rows encoded beforehand (as the API's concurrent requests arrive) score to
        // the same bits.
        let encoded: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| {
                let raws: Vec<Raw> = r.iter().map(|c| Raw::from_cell(c)).collect();
                scorer.encode(&raws).unwrap()
            })
            .collect();
        let mut again = BlockScorer::new(&scorer, policy);
        again.score_encoded(encoded.iter().map(Vec::as_slice));
        assert_eq!(again.len(), rows.len());
        for i in 0..rows.len() {
            let (
                Row::Scored {
                    probability: p,
                    decision: d,
                    reasons: r,
                },
                Row::Scored {
                    probability: q,
                    decision: e,
                    reasons: s,
                },
            ) = (block.row(i), again.row(i))
            else {
                panic!("row {i} rejected");
            };
            assert_eq!((p.to_bits(), d), (q.to_bits(), e), "row {i} under {policy}");
            let bits = |r: &[(usize, f64)]| -> Vec<(usize, u64)> {
                r.iter().map(|(j, c)| (*j, c.to_bits())).collect()
            };
            assert_eq!(bits(r), bits(s), "row {i} under {policy}");
        }
    }
    assert!(
        seen.iter().filter(|s| **s).count() >= 2,
        "the sample should hold approvals and adverse decisions"
    );
}

#[test]
fn a_bad_row_is_rejected_alone_and_fields_stay_aligned() {
    let (scorer, rows) = scorer();
    let spec = &scorer.bundle().spec;
    let mut header: Vec<&str> = vec!["application_id"];
    header.extend(spec.features.iter().map(|f| f.name.as_str()));
    header.push(&spec.target.name);
    let columns = Columns::new(spec, header.iter().copied());
    // The id, and features that are not model inputs, are carried through; the label is not.
    let carried: Vec<usize> = std::iter::once(0)
        .chain(
            spec.features
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.is_model_input())
                .map(|(j, _)| 1 + j),
        )
        .collect();
    assert_eq!(columns.passthrough, carried);
    assert_eq!(columns.target, Some(header.len() - 1));
    assert!(columns.missing_required(spec).is_empty());
    let records: Vec<csv::StringRecord> = rows[..3]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut cells = vec![format!("app-{i}")];
            cells.extend(r.iter().cloned());
            if i == 1 {
                // A word where the first numeric feature belongs.
                let j = spec
                    .features
                    .iter()
                    .position(|f| f.kind == features::FeatureKind::Numeric)
                    .unwrap();
                cells[1 + j] = "lots".into();
            }
            cells.push("0".into());
            csv::StringRecord::from(cells)
        })
        .collect();
    let mut block = BlockScorer::new(&scorer, ReasonPolicy::All);
    block.score_records(&columns, &records);
    assert!(matches!(block.row(0), Row::Scored { .. }));
    assert!(matches!(
        block.row(1),
        Row::Rejected(FeatureError::Invalid(_))
    ));
    assert!(matches!(block.row(2), Row::Scored { .. }));
    let header = result_header(&scorer, vec!["application_id".into()]);
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(&header).unwrap();
    for (i, rec) in records.iter().enumerate() {
        out.write_field(&rec[0]).unwrap();
        block.write_fields(i, &mut out).unwrap();
        out.write_record(None::<&[u8]>).unwrap();
    }
    let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
    let lines: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    for line in &lines {
        assert_eq!(line.len(), header.len());
    }
    assert_eq!(&lines[1][1], "", "the rejected row has no probability");
    let p: f64 = lines[0][1].parse().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert!(["approve", "review", "decline"].contains(&&lines[0][2]));
    assert!(!lines[0][3].is_empty(), "an explained row names a reason");
}

#[test]
fn a_missing_required_column_is_named_and_the_policy_parses() {
    let (scorer, _) = scorer();
    let spec = &scorer.bundle().spec;
    let header: Vec<&str> = spec
        .features
        .iter()
        .skip(1)
        .map(|f| f.name.as_str())
        .collect();
    let columns = Columns::new(spec, header);
    assert_eq!(columns.features[0], None);
    assert_eq!(
        columns.missing_required(spec),
        if spec.features[0].required {
            vec![spec.features[0].name.as_str()]
        } else {
            vec![]
        }
    );
    for p in [ReasonPolicy::All, ReasonPolicy::Adverse, ReasonPolicy::None] {
        assert_eq!(p.as_str().parse::<ReasonPolicy>().unwrap(), p);
    }
    assert!("some"
        .parse::<ReasonPolicy>()
        .unwrap_err()
        .contains("adverse"));
    assert!(!ReasonPolicy::Adverse.explains(Decision::Approve));
    assert!(ReasonPolicy::Adverse.explains(Decision::Decline));
}

/// A challenger trained on the same data with other settings shares the champion's encoding, so
/// the shadow scores the champion's encoded row; the result is what the challenger itself
/// answers, bit for bit. A model fitted on other rows encodes differently and is not taken for
/// one that shares the encoding.
#[test]
fn a_row_encoded_by_one_model_scores_in_another_that_encodes_alike_as_it_would_itself() {
    let (champion, rows) = scorer();
    let (spec, all, y) = german();
    let raws: Vec<Vec<Raw>> = all
        .iter()
        .map(|r| r.iter().map(|c| Raw::from_cell(c)).collect())
        .collect();
    // 12 trees fitted with `spec` on the first `n` rows of `raws`.
    let fit_with = |spec: &features::Spec, raws: &[Vec<Raw>], n: usize| {
        let cfg = TrainConfig {
            booster: TrainParams {
                trees: 12,
                ..TrainParams::default()
            },
            ..TrainConfig::default()
        };
        let fitted = fit(
            spec,
            &raws[..n],
            &y[..n],
            &cfg,
            provenance_now(),
            &mut |_| {},
        )
        .unwrap();
        Scorer::new(fitted.bundle).unwrap()
    };
    // Fitted on the champion's rows: the same fitted preprocessor, so it takes the champion's
    // encoded row as it is.
    let challenger = fit_with(&spec, &raws, raws.len());
    assert!(challenger.encodes_as(&champion));
    let mut scratch = champion.scratch();
    let mut differ = 0;
    for row in &rows[..200] {
        let raws: Vec<Raw> = row.iter().map(|c| Raw::from_cell(c)).collect();
        let served = champion.score_with(&raws, true, &mut scratch).unwrap();
        let own = challenger.score(&raws, false).unwrap();
        let shadow_row = challenger.row_from(&champion, &raws, scratch.encoded());
        assert_eq!(shadow_row.as_deref(), Some(scratch.encoded()));
        let (p, d) = challenger.decide_encoded(scratch.encoded());
        assert_eq!(p.to_bits(), own.default_probability.to_bits());
        assert_eq!(d, own.decision);
        differ += usize::from(p.to_bits() != served.default_probability.to_bits());
    }
    assert!(differ > 0, "the challenger is a different model");
    // Fitted on other rows: the same spec, another fitted preprocessor. It reads applications
    // alike, and the values validated for the champion, encoded with its own preprocessor,
    // score as it would score them itself.
    let other = fit_with(&spec, &raws, 500);
    assert!(!other.encodes_as(&champion));
    assert!(other.reads_as(&champion));
    for row in &rows[..200] {
        let raws: Vec<Raw> = row.iter().map(|c| Raw::from_cell(c)).collect();
        champion.score_with(&raws, false, &mut scratch).unwrap();
        let own = other.score(&raws, false).unwrap();
        let shadow_row = other.row_from(&champion, &raws, scratch.encoded()).unwrap();
        assert_eq!(shadow_row, other.encode(&raws).unwrap());
        let (p, d) = other.decide_encoded(&shadow_row);
        assert_eq!(p.to_bits(), own.default_probability.to_bits());
        assert_eq!(d, own.decision);
    }
    // Another spec: it does not read alike, and must read the application itself.
    let keep: Vec<usize> = (0..spec.features.len())
        .filter(|&j| spec.features[j].name != "telephone")
        .collect();
    let mut narrower = spec.clone();
    narrower.features.retain(|f| f.name != "telephone");
    let raws_narrower: Vec<Vec<Raw>> = raws
        .iter()
        .map(|r| keep.iter().map(|&j| r[j]).collect())
        .collect();
    let apart = fit_with(&narrower, &raws_narrower, raws.len());
    assert!(!apart.reads_as(&champion));
    assert_eq!(apart.row_from(&champion, &raws[0], scratch.encoded()), None);
}

#[test]
fn a_reason_shown_borrowed_writes_the_json_of_the_reason_it_becomes() {
    use model::{Reason, ReasonView, Shown};
    let values = [
        Shown::Num(4.0),
        Shown::Num(0.125),
        Shown::Num(f64::NAN),
        Shown::Text("... < 0 DM \"quoted\" \\ and é"),
        Shown::Bool(true),
        Shown::Bool(false),
        Shown::Missing,
    ];
    for value in values {
        let view = ReasonView {
            feature: "credit_amount",
            value,
            contribution: 0.871_147_600_191_761_7,
            text: "Credit amount",
        };
        let owned = Reason::from(view);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(&owned).unwrap(),
            "{value:?}"
        );
    }
}
