//! Training checkpoints (DESIGN.md decision 6): `OUT/checkpoints/step-N/` holds the adapter as a
//! PEFT directory (so `--init-adapter` and PEFT open it as is), the optimizer state
//! (`optimizer.safetensors`, see docs/optim.md) and `trainer_state.json` (step, data position,
//! dropout counter, settings that must not change on resume). A checkpoint is assembled in a
//! temporary directory and renamed into place, so a crash or a full disk never leaves a
//! half-written `step-N` and never harms an earlier one.

use crate::adapters::{save_peft_dir, Adapter};
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const FORMAT: &str = "edgetune-trainer";
pub const VERSION: u32 = 1;

/// What `trainer_state.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub version: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// Micro-batches run so far: the id of the next forward pass (dropout masks derive from it).
    pub micro_batches: u64,
    /// Seconds of training before this checkpoint.
    pub elapsed_s: f64,
    /// The data iterator's position (opaque to the trainer).
    pub data: serde_json::Value,
    /// Settings a resumed run must share (schedule, accumulation, clipping, seed...).
    pub settings: serde_json::Value,
}

/// `OUT/checkpoints/step-N`.
pub fn checkpoint_dir(out_dir: &Path, step: u64) -> PathBuf {
    out_dir.join(CHECKPOINTS_DIR).join(format!("step-{step}"))
}

/// Writes a checkpoint for `state.step` and returns its directory.
pub fn save_checkpoint(
    out_dir: &Path,
    adapter: &dyn Adapter,
    optimizer: &mut Optimizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    let root = out_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let name = format!("step-{}", state.step);
    let fin = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        remove_dir_if_exists(&tmp)?;
        std::fs::create_dir(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        save_peft_dir(adapter, &tmp)?;
        optimizer.save_state(&tmp.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_string_pretty(state)
            .map_err(|e| Error::InvalidArgument(format!("trainer state: {e}")))?;
        let state_path = tmp.join(STATE_FILE);
        crate::util::write_atomic(&state_path, |w| {
            use std::io::Write;
            w.write_all(json.as_bytes())
                .map_err(|e| Error::io(format!("writing {}", state_path.display()), e))
        })?;
        // Replace an older checkpoint of the same step (a rerun after resume) without a moment
        // where neither exists under a readable name.
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        if fin.exists() {
            std::fs::rename(&fin, &old)
                .map_err(|e| Error::io(format!("moving {} aside", fin.display()), e))?;
        }
        std::fs::rename(&tmp, &fin).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), fin.display()),
                e,
            )
        })?;
        remove_dir_if_exists(&old)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| fin)
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}

/// Reads and checks `DIR/trainer_state.json`.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::io(
            format!(
                "reading {} (is {} a checkpoint directory?)",
                path.display(),
                dir.display()
            ),
            e,
        )
    })?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    if state.format != FORMAT || state.version != VERSION {
        return Err(Error::InvalidArgument(format!(
            "{}: format {:?} version {}, expected {FORMAT:?} version {VERSION}",
            path.display(),
            state.format,
            state.version
        )));
    }
    Ok(state)
}

/// The names of settings that differ between a checkpoint and this run (empty when resumable).
pub fn settings_mismatch(saved: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (saved.as_object(), now.as_object()) else {
        return vec!["settings".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k} ({} in the checkpoint, {} now)",
                a.get(k).map_or("absent".into(), |v| v.to_string()),
                b.get(k).map_or("absent".into(), |v| v.to_string())
            )
        })
        .collect()
}
