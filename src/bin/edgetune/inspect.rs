//! `edgetune inspect MODEL [--json] [--tensor NAME --npy OUT] [--plan [training shape flags]]`

use edgetune::gguf::{Array, GgufFile, Value};
use edgetune::weights::{WeightInfo, Weights};
use edgetune::{Error, Result};
use serde_json::{json, Map, Value as Json};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to inspect.
    model: PathBuf,
    /// Print everything as one JSON object: metadata, tensors (name, type, shape in GGUF order,
    /// offset, bytes), logical weights and the memory estimate.
    #[arg(long)]
    json: bool,
    /// Dequantize this tensor (or NF4 weight) to f32; requires --npy.
    #[arg(long, value_name = "NAME", requires = "npy")]
    tensor: Option<String>,
    /// Where to write the tensor as a NumPy .npy file (row-major: rows = GGUF ne[1]).
    #[arg(long, value_name = "OUT.npy", requires = "tensor")]
    npy: Option<PathBuf>,
    /// Print the training memory plan for the shape below (no data: its bytes count as 0).
    #[arg(long)]
    plan: bool,
    /// [--plan] Tokens per sequence.
    #[arg(long, default_value_t = 512, requires = "plan")]
    seq_len: usize,
    /// [--plan] Sequences per micro-batch.
    #[arg(long, default_value_t = 1, requires = "plan")]
    batch_size: usize,
    /// [--plan] Adapter method: lora, ia3, prefix or prompt.
    #[arg(long, default_value = "lora", requires = "plan")]
    method: String,
    /// [--plan] LoRA rank.
    #[arg(long, default_value_t = 8, requires = "plan")]
    rank: usize,
    /// [--plan] Layers to adapt (as `train --targets`) [default: PEFT's for the method].
    #[arg(long, requires = "plan")]
    targets: Option<String>,
    /// [--plan] Virtual tokens of prefix / prompt tuning.
    #[arg(long, default_value_t = 20, requires = "plan")]
    num_virtual_tokens: usize,
    /// [--plan] Worker threads [default: all cores].
    #[arg(long, requires = "plan")]
    threads: Option<usize>,
    /// [--plan] ram, paged or paged-8bit.
    #[arg(long, default_value = "ram", requires = "plan")]
    optimizer_state: String,
    /// [--plan] auto, on or off.
    #[arg(long, default_value = "auto", requires = "plan")]
    checkpointing: String,
    /// [--plan] Budget of anonymous memory (512M, 1.5G, 768MiB).
    #[arg(long, value_name = "SIZE", requires = "plan")]
    memory_budget: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.model)?;
    let weights = Weights::new(&file).map_err(|e| e.in_file(&args.model))?;
    if let (Some(name), Some(out)) = (&args.tensor, &args.npy) {
        let w = weights.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no tensor named '{name}' (see `edgetune inspect {}` for the list)",
                args.model.display(),
                args.model.display()
            ))
        })?;
        let values = weights.dequantize(w)?;
        edgetune::npy::write_f32(out, &w.shape_row_major(), &values)?;
        eprintln!(
            "wrote {} ({} f32 values, shape {:?}, from {})",
            out.display(),
            values.len(),
            w.shape_row_major(),
            w.storage.name()
        );
        return Ok(());
    }
    if args.plan {
        return print_plan(&args, &file);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&args.model, &file, &weights))
                .expect("JSON of plain values")
        );
    } else {
        print_text(&args.model, &file, &weights);
    }
    Ok(())
}

/// Bytes of weights by storage type: (storage, weights, elements, bytes).
fn memory_by_type(weights: &Weights) -> Vec<(String, usize, u64, u64)> {
    let mut rows: Vec<(String, usize, u64, u64)> = Vec::new();
    for w in weights.list() {
        let name = w.storage.name();
        match rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => {
                r.1 += 1;
                r.2 += w.n_elements();
                r.3 += w.bytes;
            }
            None => rows.push((name, 1, w.n_elements(), w.bytes)),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.3));
    rows
}

fn value_json(v: &Value) -> Json {
    fn f(x: f64) -> Json {
        serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
    }
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => f(*x as f64),
        Value::F64(x) => f(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => match a {
            Array::U8(v) => json!(v),
            Array::I8(v) => json!(v),
            Array::U16(v) => json!(v),
            Array::I16(v) => json!(v),
            Array::U32(v) => json!(v),
            Array::I32(v) => json!(v),
            Array::U64(v) => json!(v),
            Array::I64(v) => json!(v),
            Array::F32(v) => Json::Array(v.iter().map(|x| f(*x as f64)).collect()),
            Array::F64(v) => Json::Array(v.iter().map(|x| f(*x)).collect()),
            Array::Bool(v) => json!(v),
            Array::String(v) => json!(v),
        },
    }
}

fn to_json(path: &std::path::Path, file: &GgufFile, weights: &Weights) -> Json {
    let h = file.header();
    let mut metadata = Map::new();
    for (k, v) in &h.metadata {
        metadata.insert(k.clone(), value_json(v));
    }
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.ne, "offset": t.offset, "bytes": t.bytes}))
        .collect();
    let logical: Vec<Json> = weights
        .list()
        .iter()
        .map(|w| json!({"name": w.name, "storage": w.storage.name(), "shape": w.ne, "bytes": w.bytes}))
        .collect();
    let by_type: Vec<Json> = memory_by_type(weights)
        .into_iter()
        .map(|(t, n, elems, bytes)| json!({"storage": t, "weights": n, "elements": elems, "bytes": bytes}))
        .collect();
    let total: u64 = weights.list().iter().map(|w| w.bytes).sum();
    let elements: u64 = weights.list().iter().map(|w| w.n_elements()).sum();
    json!({
        "path": path.display().to_string(),
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "metadata": metadata,
        "tensors": tensors,
        "weights": logical,
        "memory": {"by_type": by_type, "weight_bytes": total, "elements": elements, "f32_bytes": elements * 4},
    })
}

fn short_value(v: &Value) -> String {
    const SHOW: usize = 4;
    fn list<T: std::fmt::Debug>(name: &str, v: &[T]) -> String {
        let head: Vec<String> = v.iter().take(SHOW).map(|x| format!("{x:?}")).collect();
        let more = if v.len() > SHOW { ", ..." } else { "" };
        format!("[{name}; {}] [{}{more}]", v.len(), head.join(", "))
    }
    match v {
        Value::String(s) if s.chars().count() > 80 => {
            format!(
                "{:?}... ({} bytes)",
                s.chars().take(60).collect::<String>(),
                s.len()
            )
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => match a {
            Array::U8(v) => list("u8", v),
            Array::I8(v) => list("i8", v),
            Array::U16(v) => list("u16", v),
            Array::I16(v) => list("i16", v),
            Array::U32(v) => list("u32", v),
            Array::I32(v) => list("i32", v),
            Array::U64(v) => list("u64", v),
            Array::I64(v) => list("i64", v),
            Array::F32(v) => list("f32", v),
            Array::F64(v) => list("f64", v),
            Array::Bool(v) => list("bool", v),
            Array::String(v) => list("string", v),
        },
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn shape(w: &WeightInfo) -> String {
    w.ne.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

fn print_text(path: &std::path::Path, file: &GgufFile, weights: &Weights) {
    let h = file.header();
    println!("{}", path.display());
    println!(
        "GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset
    );
    println!("\nmetadata:");
    for (k, v) in &h.metadata {
        println!("  {k} = {}", short_value(v));
    }
    println!("\nweights (shape in GGUF order, ne[0] first):");
    let width = weights
        .list()
        .iter()
        .map(|w| w.name.len())
        .max()
        .unwrap_or(4);
    for w in weights.list() {
        println!(
            "  {:<width$}  {:<7} {:<16} {:>12}",
            w.name,
            w.storage.name(),
            shape(w),
            human_bytes(w.bytes)
        );
    }
    println!("\nmemory estimate (weights are mapped read-only; pages load on first use):");
    let mut total = 0;
    let mut elements = 0;
    for (t, n, e, bytes) in memory_by_type(weights) {
        total += bytes;
        elements += e;
        println!(
            "  {t:<7} {n:>5} weights {e:>12} elements {:>12}  {:.2} bits/weight",
            human_bytes(bytes),
            bytes as f64 * 8.0 / e.max(1) as f64
        );
    }
    println!(
        "  total   {:>5} weights {elements:>12} elements {:>12}  (as f32: {})",
        weights.list().len(),
        human_bytes(total),
        human_bytes(elements * 4)
    );
}

/// `--plan`: the training memory plan of a run of the given shape on this model.
fn print_plan(args: &Args, file: &GgufFile) -> Result<()> {
    use edgetune::train::model::{model_dims, new_adapter, AdapterSpec};
    use edgetune::train::plan::{parse_size, plan, Baseline, PlanInput};
    let threads = crate::common::threads(args.threads);
    let model = crate::common::model(
        &args.model,
        file,
        crate::common::backend(threads, edgetune::backend::Compute::F32)?,
    )?;
    let tok = crate::common::tokenizer(&args.model, file)?;
    let baseline = Baseline::measure().unwrap_or(Baseline {
        bytes: 0,
        measured: false,
    });
    drop(tok);
    let spec = AdapterSpec {
        method: edgetune::adapters::Method::from_cli_name(&args.method)?,
        targets: args
            .targets
            .as_deref()
            .map(edgetune::adapters::parse_targets)
            .transpose()?,
        rank: args.rank,
        alpha: 2.0 * args.rank as f32,
        num_virtual_tokens: args.num_virtual_tokens,
        ..AdapterSpec::default()
    };
    let adapter = new_adapter(&model_dims(&model.config), &spec, 0)?;
    let state_mode = args.optimizer_state.parse()?;
    let p = plan(
        &PlanInput {
            config: &model.config,
            mapped_bytes: file.header().tensors.iter().map(|t| t.bytes).sum(),
            adapter: &adapter,
            seq_len: args.seq_len,
            batch_size: args.batch_size,
            threads,
            state_mode,
            checkpointing: args.checkpointing.parse()?,
            budget: args.memory_budget.as_deref().map(parse_size).transpose()?,
            baseline,
            data_bytes: 0,
        },
        edgetune::train::DEFAULT_STATE_RAM_BYTES as u64,
    )?;
    println!(
        "{}: {} adapter, {} tokens x {} sequences, {threads} threads (training data not counted)",
        args.model.display(),
        spec.method.cli_name(),
        args.seq_len,
        args.batch_size
    );
    println!("{p}");
    Ok(())
}
