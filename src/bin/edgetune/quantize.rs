//! `edgetune quantize MODEL -o OUT --type nf4|q8_0|q4_0|f16|bf16|f32 [--block-size N] [--no-double-quant]`

use crate::inspect::human_bytes;
use crate::progress::Progress;
use edgetune::gguf::GgufFile;
use edgetune::quantize::{quantize_file, EmbeddingPolicy, QuantizeParams, Target};
use edgetune::Result;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
#[command(
    after_help = "Norms and other 1-D tensors are stored as F32. token_embd.weight and \
output.weight are copied unchanged unless --embeddings says otherwise. The output is written to a \
temporary file and renamed into place when complete."
)]
pub struct Args {
    /// The GGUF model to read (any supported block types, or an NF4 file written by edgetune).
    model: PathBuf,
    /// Where to write the new GGUF file.
    #[arg(short = 'o', long = "output", value_name = "OUT.gguf")]
    output: PathBuf,
    /// Target type of the weight matrices: nf4 (bitsandbytes NF4), q8_0, q4_0, f16, bf16 or f32.
    #[arg(long = "type", value_name = "TYPE", default_value = "nf4")]
    ty: String,
    /// NF4 block size: elements per absmax (a power of two, 32..=4096).
    #[arg(long, value_name = "N", default_value_t = 64)]
    block_size: usize,
    /// Store NF4 absmax values as f32 instead of double-quantizing them to 8 bits.
    #[arg(long)]
    no_double_quant: bool,
    /// What to do with token_embd.weight and output.weight: keep (copy unchanged), same (like the
    /// other matrices), or a type name.
    #[arg(long, value_name = "POLICY", default_value = "keep")]
    embeddings: String,
}

pub fn run(args: Args) -> Result<()> {
    let params = QuantizeParams {
        target: Target::parse(&args.ty)?,
        block_size: args.block_size,
        double_quant: !args.no_double_quant,
        embeddings: EmbeddingPolicy::parse(&args.embeddings)?,
    };
    let input = GgufFile::open(&args.model)?;
    let start = Instant::now();
    let mut progress = Progress::new("quantize", 1);
    let summary = quantize_file(&input, &args.output, &params, &mut |p| {
        progress.update(
            p.elements_done,
            p.elements_total,
            &format!("[{}/{}] {}", p.index + 1, p.count, p.name),
        );
    })?;
    progress.finish();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("wrote {} in {secs:.1} s", args.output.display());
    for note in &summary.fallbacks {
        eprintln!("note: {note}");
    }
    println!(
        "{} weights, {} elements: {} -> {} of tensor data ({:.3} -> {:.3} bits/weight); file {} -> {}",
        summary.weights,
        summary.elements,
        human_bytes(summary.input_tensor_bytes),
        human_bytes(summary.output_tensor_bytes),
        summary.bits_per_weight_in(),
        summary.bits_per_weight_out(),
        human_bytes(summary.input_file_bytes),
        human_bytes(summary.output_file_bytes),
    );
    for (t, n, e, bytes) in &summary.by_type {
        println!(
            "  {t:<7} {n:>5} weights {e:>12} elements {:>12}  {:.3} bits/weight",
            human_bytes(*bytes),
            *bytes as f64 * 8.0 / (*e).max(1) as f64
        );
    }
    Ok(())
}
