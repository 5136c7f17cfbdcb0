//! `edgetune generate MODEL -p PROMPT [--chat] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]`

use crate::common;
use edgetune::backend::Compute;
use edgetune::gguf::GgufFile;
use edgetune::infer::{self, InferenceAdapters, Utf8Stream};
use edgetune::model::generate::{generate_with, GenerateAdapters, GenerateParams};
use edgetune::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
#[command(
    after_help = "Tokens are printed as they are generated. Generation stops after -n tokens, \
at the model's end-of-generation token (EOS/EOT), or at the end of the context. Timing goes to \
standard error."
)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// The prompt text.
    #[arg(short = 'p', long)]
    prompt: String,
    /// A PEFT adapter directory (LoRA, IA3, prefix or prompt tuning, e.g. written by `edgetune
    /// train`) to apply while generating; repeat it to apply several LoRA (or several IA3)
    /// adapters together, as PEFT does with several active adapters.
    #[arg(long, value_name = "DIR")]
    adapter: Vec<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template (with the generation prompt).
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    n: usize,
    /// Sampling temperature; 0 (the default) is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only from the K most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Precision of the matrix-product inputs: f32, or bf16 (f32 accumulation).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    compute: Compute,
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.model)?;
    let tok = common::tokenizer(&args.model, &file)?;
    let model = common::model(
        &args.model,
        &file,
        common::backend(common::threads(args.threads), args.compute)?,
    )?;
    let prompt_ids =
        infer::prompt_ids(file.header(), &tok, &args.prompt, args.chat).map_err(|e| match e {
            e @ Error::ChatTemplate(_) => e.in_file(&args.model),
            e => e,
        })?;
    let stop_tokens = infer::stop_tokens(&tok);
    let params = GenerateParams {
        max_tokens: args.n,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop_tokens,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut stream = Utf8Stream::default();
    let mut write_error = None;
    let start = Instant::now();
    let mut first_token_at = None;
    let mut adapters = InferenceAdapters::load(&model, &args.adapter)?;
    let (prefix, virtual_tokens, mut hook) = adapters.parts();
    let adapters = GenerateAdapters {
        hook: Some(&mut hook),
        prefix: prefix.cloned(),
        virtual_tokens,
    };
    let generated = generate_with(&model, &prompt_ids, &params, adapters, &mut |id| {
        first_token_at.get_or_insert_with(Instant::now);
        let bytes = match tok.token_to_piece(id) {
            Ok(bytes) => bytes,
            Err(e) => {
                write_error = Some(e);
                return false;
            }
        };
        // Print whole characters; an incomplete one waits for the next token.
        let r = stream.push(&bytes, |b| out.write_all(b).and_then(|_| out.flush()));
        if let Err(e) = r {
            write_error = Some(Error::io("writing to standard output", e));
            return false;
        }
        true
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let _ = out.write_all(&stream.finish());
    let _ = writeln!(out);
    let total = start.elapsed().as_secs_f64();
    let prompt_s = first_token_at.map_or(total, |t| (t - start).as_secs_f64());
    let gen_s = (total - prompt_s).max(1e-9);
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tokens/s); generated {} tokens in {:.2} s ({:.1} tokens/s)",
        prompt_ids.len(),
        prompt_s,
        prompt_ids.len() as f64 / prompt_s.max(1e-9),
        generated.len(),
        gen_s,
        generated.len().saturating_sub(1) as f64 / gen_s
    );
    Ok(())
}
