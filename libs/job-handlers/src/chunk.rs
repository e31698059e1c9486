//! Scoring one chunk of a batch job: the chunk file through the block scorer into a result part
//! and an errors part, each written under a temporary name and moved into place when complete,
//! so a redelivered chunk rewrites them whole.

use std::sync::Arc;

use anyhow::Context;
use features::Raw;
use jobs::{Format, JobState, ScoreChunk};
use model::batch::{result_header, Row};
use model::{BlockScorer, Columns, ReasonPolicy, Scorer};

use crate::{metrics, JobError, JobModel, WorkerState};

/// Scores one chunk; returns (scored, rejected). With an audit log, every scored row's record
/// is written (idempotently: `<job>:<row>`) before the chunk counts as done.
pub async fn process(
    task: &ScoreChunk,
    state: &WorkerState,
    owner: Option<String>,
) -> anyhow::Result<(u64, u64)> {
    let loaded = state.scorer(&task.model).await?;
    let input = state
        .layout
        .chunk(&task.job_id, task.chunk, task.format)
        .context("invalid job id")?;
    let result = state
        .layout
        .result(&task.job_id, task.chunk)
        .context("invalid job id")?;
    let errors = state
        .layout
        .errors(&task.job_id, task.chunk)
        .context("invalid job id")?;
    let job = ChunkJob {
        format: task.format,
        first_row: task.first_row,
        reasons: task.reasons,
    };
    let audited = state.audit.is_some().then(|| Audited {
        job_id: task.job_id.clone(),
        owner,
        model: task.model.clone(),
        policy: task.reasons,
        records: Vec::new(),
    });
    let watched = loaded.clone();
    let drift = loaded.drift.as_ref().map(|_| Vec::new());
    let (counts, audited, drift) = tokio::task::spawn_blocking(move || {
        let (mut audited, mut drift) = (audited, drift);
        let mut seen = Seen {
            audited: audited.as_mut(),
            drift: drift.as_mut(),
        };
        let counts = score_file(&loaded, &input, job, &result, &errors, &mut seen)?;
        anyhow::Ok((counts, audited, drift))
    })
    .await??;
    if let (Some(a), Some(audited)) = (&state.audit, audited) {
        let n = audited.records.len() as u64;
        let written = match a.store().await {
            Ok(store) => store.insert(&audited.records).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(_) => audit::written().inc_by(n),
            Err(e) if a.mode == audit::Mode::FailOpen => {
                audit::dropped().inc_by(n);
                tracing::warn!(job.id = %task.job_id, chunk = task.chunk, records = n, error = %e, "cannot record the chunk's decisions (AUDIT_MODE=fail-open: dropped)");
            }
            Err(e) => return Err(e.context("cannot record the chunk's decisions in the audit log")),
        }
    }
    // Counted once the chunk is done, so a failed try is not counted twice.
    if let (Some(monitor), Some(slots)) = (&watched.drift, drift) {
        monitor.observe_binned(&slots);
        let r = monitor.report();
        telemetry::publish_drift(r.window, r.score.psi, &r.psi_by_feature());
    }
    Ok(counts)
}

/// What is kept of each scored row besides its result: its audit record and its drift bins.
struct Seen<'a> {
    audited: Option<&'a mut Audited>,
    drift: Option<&'a mut Vec<u16>>,
}

impl Seen<'_> {
    fn wanted(&self) -> bool {
        self.audited.is_some() || self.drift.is_some()
    }

    /// Row `i` of the block (file row `row`), if it was scored.
    fn push(
        &mut self,
        m: &JobModel,
        block: &BlockScorer<'_>,
        i: usize,
        row: u64,
        raws: &[Raw<'_>],
    ) {
        if let (Some(slots), Some(monitor), Row::Scored { probability, .. }) =
            (self.drift.as_deref_mut(), &m.drift, block.row(i))
        {
            let b = monitor.baseline();
            let at = slots.len();
            slots.resize(at + b.width(), 0);
            b.bin(&m.scorer.bundle().spec, raws, probability, &mut slots[at..]);
        }
        if let Some(a) = self.audited.as_deref_mut() {
            a.push(m, block, i, row, raws);
        }
    }
}

/// A chunk's audit records, gathered while it is scored.
struct Audited {
    job_id: String,
    owner: Option<String>,
    model: jobs::PinnedModel,
    policy: ReasonPolicy,
    records: Vec<audit::Record>,
}

impl Audited {
    /// Records row `i` of the block (file row `row`) if it was scored.
    fn push(
        &mut self,
        m: &JobModel,
        block: &BlockScorer<'_>,
        i: usize,
        row: u64,
        raws: &[Raw<'_>],
    ) {
        let Row::Scored {
            probability,
            decision,
            reasons,
        } = block.row(i)
        else {
            return;
        };
        let reasons: Vec<model::Reason> = reasons
            .iter()
            .map(|(j, c)| m.scorer.reason(*j, *c, raws))
            .collect();
        let context = audit::Context {
            source: audit::Source::Job,
            request_id: &self.job_id,
            key_id: self.owner.as_deref(),
            model_name: &self.model.name,
            model_version: &self.model.version,
            bundle_sha256: &m.bundle_sha256,
            thresholds_json: &m.thresholds_json,
            reason_policy: self.policy,
        };
        let record = context.record(
            format!("{}:{row}", self.job_id),
            row as i64,
            &m.scorer.bundle().spec,
            raws,
            probability,
            decision,
            &reasons,
        );
        self.records.push(record);
    }
}

/// How a chunk is read and explained.
#[derive(Clone, Copy)]
struct ChunkJob {
    format: Format,
    first_row: u64,
    reasons: ReasonPolicy,
}

impl ChunkJob {
    /// The row's number in the uploaded file (1-based, header not counted).
    fn row(&self, index_in_chunk: usize) -> u64 {
        self.first_row + index_in_chunk as u64 + 1
    }
}

/// Rows scored together.
const BLOCK: usize = 2048;

/// A chunk's result part and errors part, written under temporary names and moved into place
/// when complete, so a redelivered chunk rewrites them whole. Shared by both input formats.
struct Parts {
    out: csv::Writer<std::fs::File>,
    err: csv::Writer<std::fs::File>,
    files: [(std::path::PathBuf, std::path::PathBuf); 2],
    scored: u64,
    rejected: u64,
}

impl Parts {
    /// `header`: the carried-through columns' names.
    fn create(
        result: &std::path::Path,
        errors: &std::path::Path,
        scorer: &Scorer,
        header: Vec<String>,
    ) -> anyhow::Result<Parts> {
        std::fs::create_dir_all(result.parent().context("result path")?)?;
        std::fs::create_dir_all(errors.parent().context("errors path")?)?;
        let files = [
            (result.with_extension("partial"), result.to_path_buf()),
            (errors.with_extension("partial"), errors.to_path_buf()),
        ];
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(1 << 20)
            .from_path(&files[0].0)?;
        let mut err = csv::Writer::from_path(&files[1].0)?;
        out.write_record(result_header(scorer, header))?;
        err.write_record(["row", "error"])?;
        Ok(Parts {
            out,
            err,
            files,
            scored: 0,
            rejected: 0,
        })
    }

    /// Row `i` of the scored block: the carried-through values, then probability, decision and
    /// the top reasons; or its number in the file and why it was rejected.
    fn write<'c>(
        &mut self,
        block: &mut BlockScorer<'_>,
        i: usize,
        row: u64,
        carried: impl IntoIterator<Item = &'c str>,
    ) -> anyhow::Result<()> {
        if let Row::Rejected(e) = block.row(i) {
            return self.rejected(row, &e.to_string());
        }
        for value in carried {
            self.out.write_field(value)?;
        }
        block.write_fields(i, &mut self.out)?;
        self.out.write_record(None::<&[u8]>)?;
        self.scored += 1;
        Ok(())
    }

    fn rejected(&mut self, row: u64, reason: &str) -> anyhow::Result<()> {
        self.err
            .write_record([row.to_string(), reason.to_string()])?;
        self.rejected += 1;
        Ok(())
    }

    /// Flushes both parts, syncs them to disk, then moves them into place: a part is never
    /// seen complete before the disk has it. On failure (a full disk) the temporary files go
    /// (see `Drop`) and the chunk fails, to be retried.
    fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        self.out.flush()?;
        self.err.flush()?;
        self.out.get_ref().sync_all()?;
        self.err.get_ref().sync_all()?;
        for (tmp, done) in &self.files {
            std::fs::rename(tmp, done)?;
        }
        Ok((self.scored, self.rejected))
    }
}

impl Drop for Parts {
    /// Removes the temporary files of parts that were not finished (after `finish` they are
    /// renamed and this finds nothing).
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Reads a chunk file and writes its result part and errors part.
fn score_file(
    m: &JobModel,
    input: &std::path::Path,
    job: ChunkJob,
    result: &std::path::Path,
    errors: &std::path::Path,
    seen: &mut Seen<'_>,
) -> anyhow::Result<(u64, u64)> {
    let scorer = &m.scorer;
    if job.format == Format::Ndjson {
        return score_ndjson(m, input, job, result, errors, seen);
    }
    let spec = &scorer.bundle().spec;
    let mut rdr = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_path(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let headers = rdr.headers()?.clone();
    let columns = Columns::new(spec, headers.iter());
    let header = columns
        .passthrough
        .iter()
        .map(|&c| headers[c].to_string())
        .collect();
    let mut parts = Parts::create(result, errors, scorer, header)?;
    let mut block = BlockScorer::new(scorer, job.reasons);
    // Only the chunk's last scored rows can still be in the drift window once it is counted,
    // so only those are binned, read again at the end (the window comes out the same).
    let mut tail = match (&seen.drift, &m.drift) {
        (Some(_), Some(monitor)) => Some(Tail::new(monitor.capacity())),
        _ => None,
    };
    let mut recs: Vec<csv::StringRecord> = vec![csv::StringRecord::new(); BLOCK];
    let mut index = 0usize;
    loop {
        let mut n = 0;
        while n < BLOCK && rdr.read_record(&mut recs[n])? {
            n += 1;
        }
        if n == 0 {
            break;
        }
        block.score_records(&columns, &recs[..n]);
        let mut raws = Vec::new();
        for (i, rec) in recs[..n].iter().enumerate() {
            let carried = columns
                .passthrough
                .iter()
                .map(|&c| rec.get(c).unwrap_or(""));
            parts.write(&mut block, i, job.row(index + i), carried)?;
            if let Some(a) = seen.audited.as_deref_mut() {
                columns.raws(rec, &mut raws);
                a.push(m, &block, i, job.row(index + i), &raws);
            }
            if let (Some(t), Row::Scored { probability, .. }, Some(at)) =
                (&mut tail, block.row(i), rec.position())
            {
                t.push(at.byte(), probability);
            }
        }
        index += n;
    }
    if let (Some(t), Some(slots), Some(monitor)) = (tail, seen.drift.as_deref_mut(), &m.drift) {
        t.bin(input, &columns, spec, monitor.baseline(), slots)?;
    }
    parts.finish()
}

/// Where the chunk's last scored rows start in its file, and their probabilities: at most a
/// drift window's worth.
struct Tail {
    window: usize,
    rows: std::collections::VecDeque<(u64, f64)>,
}

impl Tail {
    fn new(window: usize) -> Tail {
        Tail {
            window,
            rows: std::collections::VecDeque::new(),
        }
    }

    fn push(&mut self, byte: u64, probability: f64) {
        if self.rows.len() >= self.window {
            self.rows.pop_front();
        }
        self.rows.push_back((byte, probability));
    }

    /// Reads the rows again from `input` and appends their drift bins to `slots`, in order.
    fn bin(
        self,
        input: &std::path::Path,
        columns: &Columns,
        spec: &features::Spec,
        baseline: &model::drift::Baseline,
        slots: &mut Vec<u16>,
    ) -> anyhow::Result<()> {
        let Some(&(first, _)) = self.rows.front() else {
            return Ok(());
        };
        let mut rdr = csv::ReaderBuilder::new()
            .buffer_capacity(1 << 20)
            .from_path(input)?;
        rdr.headers()?;
        let mut at = csv::Position::new();
        at.set_byte(first);
        rdr.seek(at)?;
        let mut rec = csv::StringRecord::new();
        let mut wanted = self.rows.into_iter().peekable();
        while let Some(&(byte, probability)) = wanted.peek() {
            anyhow::ensure!(
                rdr.read_record(&mut rec)?,
                "the chunk ended before its row at byte {byte}"
            );
            // The record's own start: blank lines before it are skipped by the reader.
            if rec.position().map(csv::Position::byte) != Some(byte) {
                // A rejected row between two scored ones.
                continue;
            }
            wanted.next();
            let mut raws = Vec::new();
            columns.raws(&rec, &mut raws);
            let at = slots.len();
            slots.resize(at + baseline.width(), 0);
            baseline.bin(spec, &raws, probability, &mut slots[at..]);
        }
        Ok(())
    }
}

/// The apalis handler: skips chunks of finished (cancelled, failed) jobs, scores, records.
/// Transient failures (registry briefly down, storage hiccup) are retried by apalis' retry
/// layer with exponential backoff ([`crate::consumers`]); the last attempt that fails fails the
/// job with the reason.
pub async fn handle(
    task: ScoreChunk,
    state: apalis::prelude::Data<Arc<WorkerState>>,
    attempt: apalis::prelude::Attempt,
) -> Result<(), JobError> {
    // Continue the submitting request's trace.
    let span = tracing::info_span!("score_chunk", job.id = %task.job_id, chunk = task.chunk);
    telemetry::continue_trace(&span, &task.trace_context);
    tracing::Instrument::instrument(handle_chunk(task, state, attempt.current()), span).await
}

async fn handle_chunk(
    task: ScoreChunk,
    state: apalis::prelude::Data<Arc<WorkerState>>,
    attempt: usize,
) -> Result<(), JobError> {
    let job = state.store.get(&task.job_id).await?;
    if job.state.is_final() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let outcome = process(&task, &state, job.owner.clone()).await;
    metrics::chunk_seconds().observe(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        if attempt < state.attempts as usize {
            tracing::warn!(job.id = %task.job_id, chunk = task.chunk, attempt, "chunk failed; it will be retried");
            return Err(JobError::Retry(format!("chunk {}: {e:#}", task.chunk)));
        }
    }
    match outcome {
        Ok((scored, rejected)) => {
            metrics::chunks().with_label_values(&["scored"]).inc();
            metrics::rows_scored().inc_by(scored);
            metrics::rows_rejected().inc_by(rejected);
            state
                .store
                .complete_chunk(&task.job_id, task.chunk, scored, rejected)
                .await?;
            tracing::info!(job.id = %task.job_id, chunk = task.chunk, scored, rejected, "chunk scored");
            Ok(())
        }
        Err(e) => {
            metrics::chunks().with_label_values(&["failed"]).inc();
            let reason = format!("chunk {}: {e:#}", task.chunk);
            tracing::warn!(job.id = %task.job_id, error = %reason, "chunk failed");
            state
                .store
                .finish(&task.job_id, JobState::Failed, &reason)
                .await?;
            Err(JobError::Failed(reason))
        }
    }
}

/// NDJSON chunks: each line an application object. Keys that are not model features (an id,
/// say; the label is dropped) are carried through as columns, taken from the chunk's first line.
fn score_ndjson(
    m: &JobModel,
    input: &std::path::Path,
    job: ChunkJob,
    result: &std::path::Path,
    errors: &std::path::Path,
    seen: &mut Seen<'_>,
) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    let scorer = &m.scorer;
    type Object = serde_json::Map<String, serde_json::Value>;
    let spec = &scorer.bundle().spec;
    let mut lines = std::io::BufReader::new(std::fs::File::open(input)?).lines();
    let mut block_lines: Vec<String> = Vec::with_capacity(BLOCK);
    let mut parts: Option<Parts> = None;
    let mut passthrough: Vec<String> = Vec::new();
    let mut block = BlockScorer::new(scorer, job.reasons);
    let mut index = 0usize;
    loop {
        block_lines.clear();
        for line in lines.by_ref().take(BLOCK) {
            block_lines.push(line?);
        }
        let objects: Vec<Option<Object>> = block_lines
            .iter()
            .map(|l| match serde_json::from_str(l) {
                Ok(serde_json::Value::Object(obj)) => Some(obj),
                _ => None,
            })
            .collect();
        if parts.is_none() {
            let first = objects.first().cloned().flatten().unwrap_or_default();
            passthrough = first
                .keys()
                .filter(|key| {
                    *key != &spec.target.name
                        && spec
                            .position(key)
                            .is_none_or(|j| !spec.features[j].is_model_input())
                })
                .cloned()
                .collect();
            parts = Some(Parts::create(result, errors, scorer, passthrough.clone())?);
        }
        let parts = parts.as_mut().expect("created above");
        if objects.is_empty() {
            break;
        }
        block.score(objects.len(), |i, raws| {
            if let Some(obj) = &objects[i] {
                raws.extend(
                    spec.features
                        .iter()
                        .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json)),
                );
            }
            Ok(())
        });
        for (i, obj) in objects.iter().enumerate() {
            let Some(obj) = obj else {
                parts.rejected(job.row(index + i), "not a JSON object")?;
                continue;
            };
            let carried: Vec<String> = passthrough
                .iter()
                .map(|key| match obj.get(key) {
                    Some(serde_json::Value::String(v)) => v.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            parts.write(
                &mut block,
                i,
                job.row(index + i),
                carried.iter().map(String::as_str),
            )?;
            if seen.wanted() {
                let raws: Vec<Raw<'_>> = spec
                    .features
                    .iter()
                    .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json))
                    .collect();
                seen.push(m, &block, i, job.row(index + i), &raws);
            }
        }
        index += objects.len();
    }
    parts.expect("created on the first pass").finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts that were not finished (the disk filled up, the chunk failed) leave no `.partial`
    /// files behind; finished parts are moved into place. Before, a failed chunk left both
    /// temporary files until its job's folder was swept.
    #[test]
    fn unfinished_parts_leave_no_partial_files() {
        let dir = test_support::tmp("chunk-parts");
        let bundle = test_support::train_german_bundle(&dir.join("bundle"), 3, 1);
        let scorer = Scorer::new(model::Bundle::load(&bundle).unwrap()).unwrap();
        let result = dir.join("results/000000.csv");
        let errors = dir.join("errors/000000.csv");
        let temporary = [
            result.with_extension("partial"),
            errors.with_extension("partial"),
        ];
        let parts = Parts::create(&result, &errors, &scorer, vec!["id".into()]).unwrap();
        assert!(temporary.iter().all(|t| t.exists()));
        drop(parts);
        assert!(
            temporary.iter().all(|t| !t.exists()),
            "left behind: {temporary:?}"
        );
        assert!(!result.exists() && !errors.exists());
        let parts = Parts::create(&result, &errors, &scorer, vec!["id".into()]).unwrap();
        assert_eq!(parts.finish().unwrap(), (0, 0));
        assert!(result.exists() && errors.exists());
        assert!(temporary.iter().all(|t| !t.exists()));
    }

    /// A chunk's rows counted into the drift window (only its last scored rows are binned) leave
    /// the window as counting every scored row one by one does: for windows smaller and larger
    /// than a block and than the chunk, with rejected rows among the last ones.
    #[test]
    fn a_chunk_leaves_the_drift_window_as_counting_every_row_does() {
        let dir = test_support::tmp("chunk-drift");
        let bundle = model::Bundle::load(&test_support::train_german_bundle(
            &dir.join("bundle"),
            3,
            1,
        ))
        .unwrap();
        let baseline = bundle.drift_baseline.clone().expect("a baseline");
        let german =
            std::fs::read_to_string(format!("{}/data/german_credit.csv", test_support::REPO))
                .unwrap();
        let (header, rows) = german.split_once('\n').unwrap();
        let amount = header
            .split(',')
            .position(|h| h == "credit_amount")
            .unwrap();
        // 5,000 rows; some near the end do not validate, and blank lines come before some.
        let rows: Vec<&str> = rows.lines().cycle().take(5000).collect();
        let mut data = format!("{header}\n");
        for (i, row) in rows.iter().enumerate() {
            if i % 997 == 0 || i == 4991 {
                data.push_str("\n\n");
            }
            if [1200, 4100, 4500, 4990, 4999].contains(&i) || (4600..4700).contains(&i) {
                let mut cells: Vec<&str> = row.split(',').collect();
                cells[amount] = "not a number";
                data.push_str(&cells.join(","));
            } else {
                data.push_str(row);
            }
            data.push('\n');
        }
        let input = dir.join("chunk.csv");
        std::fs::write(&input, &data).unwrap();
        let scorer = Scorer::new(bundle).unwrap();
        let spec = &scorer.bundle().spec;
        for window in [100, 1000, 2500, 4790, 20_000] {
            let m = JobModel {
                scorer: scorer.clone(),
                bundle_sha256: String::new(),
                thresholds_json: String::new(),
                drift: Some(model::drift::Monitor::new(&baseline, window)),
            };
            let mut slots = Vec::new();
            let mut seen = Seen {
                audited: None,
                drift: Some(&mut slots),
            };
            let job = ChunkJob {
                format: Format::Csv,
                first_row: 0,
                reasons: ReasonPolicy::None,
            };
            let (scored, rejected) = score_file(
                &m,
                &input,
                job,
                &dir.join("result.csv"),
                &dir.join("errors.csv"),
                &mut seen,
            )
            .unwrap();
            assert_eq!((scored, rejected), (4895, 105));
            let monitor = m.drift.as_ref().unwrap();
            monitor.observe_binned(&slots);
            let every = model::drift::Monitor::new(&baseline, window);
            let mut rdr = csv::Reader::from_path(&input).unwrap();
            let columns = Columns::new(spec, rdr.headers().unwrap().iter());
            for rec in rdr.records() {
                let rec = rec.unwrap();
                let mut raws = Vec::new();
                columns.raws(&rec, &mut raws);
                if let Ok(s) = scorer.score(&raws, false) {
                    every.observe(spec, &raws, s.default_probability);
                }
            }
            assert_eq!(monitor.report(), every.report(), "window {window}");
        }
    }
}
