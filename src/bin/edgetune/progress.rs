//! Progress reporting: a bar on a terminal, a plain line every ~10% otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_decile: u64,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {percent:>3}% {elapsed_precise} ETA {eta} {msg}",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            last_decile: 0,
        }
    }

    pub fn update(&mut self, done: u64, total: u64, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(msg.to_string());
            }
            None => {
                let decile = (done * 10).checked_div(total).unwrap_or(10);
                if decile > self.last_decile || done == 0 {
                    self.last_decile = decile;
                    eprintln!("{}: {:>3}% {msg}", self.label, decile * 10);
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
