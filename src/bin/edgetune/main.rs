//! The `edgetune` command line: a thin shell over the library (DESIGN.md, "Command line").

mod common;
mod generate;
mod inspect;
mod perplexity;
mod progress;
mod quantize;
mod tokenize;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgetune",
    version,
    about = "On-device parameter-efficient fine-tuning for GGUF language models",
    long_about = "edgetune memory-maps GGUF models (read-only, zero copy), re-encodes them (NF4 with \
double quantization as bitsandbytes does it, Q8_0, F16...), and is growing into a trainer for LoRA, IA3 \
and prefix adapters inside a fixed RAM budget.\n\nSet EDGETUNE_SIMD=scalar|avx2|avx512|neon to cap the \
SIMD level used by the kernels."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata, tensors and a memory estimate; optionally dump one tensor.
    Inspect(inspect::Args),
    /// Re-encode a model's weights (NF4, Q8_0, Q4_0, F16, BF16, F32) into a new GGUF file.
    Quantize(quantize::Args),
    /// Turn text into token ids with the model's own tokenizer (from its GGUF metadata).
    Tokenize(tokenize::Args),
    /// Generate text from a prompt (greedy or sampled), streaming tokens as they come.
    Generate(generate::Args),
    /// Measure a model's perplexity (mean negative log-likelihood) on text or token data.
    Perplexity(perplexity::Args),
    /// Fine-tune an adapter (LoRA, IA3, prefix, prompt) on a JSONL or .txt file.
    Train(Box<train::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Train(args) => train::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
