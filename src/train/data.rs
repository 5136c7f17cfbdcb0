//! The trainer's `DataSource` over `data::Batcher`, and `data::Batch` → `MicroBatch`.

use super::{DataSource, MicroBatch};
use crate::data::{Batch, Batcher, DataState};
use crate::error::{Error, Result};

/// Converts a data batch (packed rows keep their document lengths).
pub fn micro_batch(b: &Batch) -> Result<MicroBatch> {
    Ok(MicroBatch {
        rows: b.rows,
        width: b.width,
        input_ids: b.input_ids.clone(),
        labels: b.labels.clone(),
        tokens: b.lengths.iter().sum(),
        doc_lengths: b.doc_lengths.clone(),
    })
}

/// Micro-batches epoch after epoch from a `Batcher`; its position is the checkpointed state.
pub struct BatcherSource(pub Batcher);

impl DataSource for BatcherSource {
    fn next_step(&mut self, grad_accum: usize) -> Result<Vec<MicroBatch>> {
        self.0
            .next_step(grad_accum)?
            .iter()
            .map(micro_batch)
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        let s = self.0.state();
        serde_json::json!({ "epoch": s.epoch, "index": s.index, "fingerprint": s.fingerprint })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: DataState = serde_json::from_value(state.clone()).map_err(|e| {
            Error::InvalidArgument(format!("checkpoint data position {state}: {e}"))
        })?;
        self.0.restore(&s)
    }
}
