//! `metrics.jsonl` (DESIGN.md, "Command line"): one JSON object per optimizer step, and the
//! resident-memory figure it reports.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The file name inside the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer step as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based optimizer step.
    pub step: u64,
    /// Mean cross-entropy over the step's predicted tokens (all its micro-batches), before the
    /// update.
    pub loss: f64,
    /// Learning rate the update used.
    pub lr: f64,
    /// Global gradient 2-norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) input tokens of the step.
    pub tokens: u64,
    /// `tokens` over the step's wall time.
    pub tokens_per_sec: f64,
    /// Seconds since training started (a resumed run continues the count).
    pub elapsed_s: f64,
    /// The process's anonymous resident memory (`RssAnon`), 0 where unknown.
    pub rss_anon_bytes: u64,
    /// Mean loss over the validation sequences after this step's update, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
}

/// Appends step records to `metrics.jsonl`, one line each, flushed per line.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a fresh file (an existing one is replaced).
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file =
            File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(MetricsLog {
            path: path.to_owned(),
            file,
        })
    }

    /// Continues a file after a resume from step `step`: lines of later steps (written after the
    /// checkpoint by the interrupted run) are dropped, so the file reads as one run.
    pub fn resume(path: &Path, step: u64) -> Result<MetricsLog> {
        let mut kept = Vec::new();
        if path.exists() {
            let f = File::open(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                if line.trim().is_empty() {
                    continue;
                }
                let m: StepMetrics = serde_json::from_str(&line).map_err(|e| {
                    Error::InvalidArgument(format!("{}:{}: {e}", path.display(), i + 1))
                })?;
                if m.step <= step {
                    kept.push(line);
                }
            }
        }
        crate::util::write_atomic(path, |w| {
            for line in &kept {
                writeln!(w, "{line}")
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            Ok(())
        })?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(MetricsLog {
            path: path.to_owned(),
            file,
        })
    }

    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(m)
            .map_err(|e| Error::InvalidArgument(format!("step {} metrics: {e}", m.step)))?;
        line.push('\n');
        // One write per line, so a reader never sees half a record.
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

/// Reads every record of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::InvalidArgument(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// `RssAnon` of this process from `/proc/self/status`, in bytes; `None` off Linux.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line
        .trim_start_matches("RssAnon:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
