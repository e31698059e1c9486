//! Reason codes for single applications that arrive together, explained together.
//!
//! One row's TreeSHAP walks every tree's tables on its own (about 9.4 µs for 200 depth-4
//! trees). A block of rows shares each tree's split tests and table reads across lanes: 5.6 µs
//! a row for 8 rows, 3.8 µs for 32 (`cargo bench -p model --bench scorer -- treeshap_`). Under
//! load, an actix worker wakes with several requests ready at once. Each `POST /v1/predict`
//! queues its encoded row here and waits; the first one of a round spawns the flush on the same
//! worker, where it runs after every request already woken has queued its own row. The block
//! gives the same bits as one row alone, so an applicant's reasons never depend on which
//! requests came with theirs, and replay finds them again.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::models::ServingModel;

/// One request's row, waiting for the flush.
struct Waiting {
    model: Arc<ServingModel>,
    row: Vec<f32>,
    reply: oneshot::Sender<Vec<f64>>,
}

thread_local! {
    /// The rows queued on this worker since the last flush.
    static WAITING: RefCell<Vec<Waiting>> = const { RefCell::new(Vec::new()) };
}

/// The contributions per encoded column of `row` (encoded by `model`'s preprocessor), explained
/// with the rows that other requests on this worker queued in the same round. `None` when the
/// flush could not run (the worker is stopping): the caller then explains the row alone.
pub async fn contributions(model: &Arc<ServingModel>, row: &[f32]) -> Option<Vec<f64>> {
    let (reply, answer) = oneshot::channel();
    let first = WAITING.with_borrow_mut(|waiting| {
        waiting.push(Waiting {
            model: model.clone(),
            row: row.to_vec(),
            reply,
        });
        waiting.len() == 1
    });
    if first {
        // On this worker's queue, behind the requests that were woken with this one.
        actix_web::rt::spawn(async { flush() });
    }
    answer.await.ok()
}

/// Explains every queued row, a block per serving model (a reload may land between two
/// requests of a round).
fn flush() {
    let mut waiting = WAITING.with_borrow_mut(std::mem::take);
    crate::metrics::explained_together(waiting.len());
    while let Some(first) = waiting.first() {
        let model = first.model.clone();
        let (group, rest) = waiting
            .into_iter()
            .partition(|w| Arc::ptr_eq(&w.model, &model));
        waiting = rest;
        explain(&model, group);
    }
}

fn explain(model: &ServingModel, group: Vec<Waiting>) {
    let scorer = &model.scorer;
    let width = scorer.preprocessor().width();
    let rows: Vec<f32> = group.iter().flat_map(|w| w.row.iter().copied()).collect();
    let mut phi = vec![0.0; rows.len()];
    scorer.contributions_block(&rows, &mut phi);
    for (w, phi) in group.into_iter().zip(phi.chunks_exact(width)) {
        // A request that went away (its client hung up) no longer waits.
        let _ = w.reply.send(phi.to_vec());
    }
}
