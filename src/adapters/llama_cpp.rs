//! Export of a LoRA adapter as a llama.cpp LoRA GGUF (FORMATS.md Part I §5): metadata
//! `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (f32), tensors
//! `blk.N.<name>.weight.lora_a` (ne `[n_in, r]`) and `.lora_b` (ne `[r, n_out]`), f32, with lora_b
//! rows in the model's (GGUF, Q/K-permuted) order, which is how we hold them in memory.

use super::lora::Lora;
use super::Adapter;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use std::path::Path;

/// Writes `lora` as a llama.cpp adapter for a base model of architecture `arch`
/// (`general.architecture` of the base file, which llama.cpp checks).
///
/// llama.cpp scales by `alpha / r` (r from the tensor shape); an rsLoRA adapter is written with
/// `alpha · √r` so the product is the same `s`.
pub fn export_lora_gguf(lora: &Lora, arch: &str, path: &Path) -> Result<()> {
    let r = lora.config().rank;
    let alpha = lora.scale() * r as f32;
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.to_string()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    w.set("adapter.lora.alpha", Value::F32(alpha));
    let mut data: Vec<Vec<u8>> = Vec::new();
    for site in lora.sites().collect::<Vec<_>>() {
        let (a, b) = lora
            .weights(site)
            .ok_or_else(|| Error::InvalidArgument(format!("{site}: not adapted")))?;
        let (n_in, n_out) = site.target.shape(Adapter::dims(lora));
        let base = format!("blk.{}.{}.weight", site.layer, site.target.gguf_name());
        w.add_tensor(TensorSpec::new(
            format!("{base}.lora_a"),
            GgmlType::F32,
            &[n_in as u64, r as u64],
        ))?;
        w.add_tensor(TensorSpec::new(
            format!("{base}.lora_b"),
            GgmlType::F32,
            &[r as u64, n_out as u64],
        ))?;
        data.push(a.iter().flat_map(|v| v.to_le_bytes()).collect());
        data.push(b.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    w.write_with_data(path, &refs)
}
