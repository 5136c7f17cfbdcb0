//! PEFT adapter directories (DESIGN.md decision 6; FORMATS.md Part II §3, §6): `adapter_config.json`
//! plus `adapter_model.safetensors` (metadata `{"format": "pt"}`, Hugging Face module names, tensors
//! in Hugging Face row order). Loading checks every tensor name, shape and dtype against what the
//! config implies for the model and reports all mismatches in one error.

use super::config::{MethodConfig, PeftConfig};
use super::permute::{gguf_to_hf_rows, hf_to_gguf_rows};
use super::target::ModelDims;
use super::{Adapter, AnyAdapter, Ia3, Lora, PrefixTuning, PromptTuning};
use crate::error::{Error, Result};
use crate::util::write_atomic;
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// A tensor of the file: key, row-major shape, values (Hugging Face order).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The adapter's tensors as the PEFT file holds them (Q/K rows back in Hugging Face order).
pub fn hf_tensors(adapter: &dyn Adapter) -> Result<Vec<NamedTensor>> {
    let params = adapter.params();
    let mut out = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let data = match adapter.hf_row_permutation(i) {
            Some(heads) => {
                let rows = p.shape()[0];
                gguf_to_hf_rows(p.data(), rows, p.len() / rows, heads, p.name())?
            }
            None => p.data().to_vec(),
        };
        out.push((p.name().to_string(), p.shape().to_vec(), data));
    }
    Ok(out)
}

struct F32Tensor<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl View for &F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The bytes of `adapter_model.safetensors` for these tensors (as `safetensors.torch.save_file`
/// lays them out, metadata `{"format": "pt"}`).
pub fn safetensors_bytes(tensors: &[NamedTensor]) -> Result<Vec<u8>> {
    let views: Vec<(&str, F32Tensor)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.as_str(), F32Tensor { shape, bytes })
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views.iter().map(|(n, t)| (*n, t)), Some(meta))
        .map_err(|e| Error::InvalidArgument(format!("serializing adapter tensors: {e}")))
}

/// Writes `adapter` as a PEFT directory. A new directory is built under a temporary name and
/// renamed into place; into an existing directory (e.g. a training run's output) each file is
/// written atomically, weights first.
pub fn save_peft_dir(adapter: &dyn Adapter, dir: &Path) -> Result<()> {
    let weights = safetensors_bytes(&hf_tensors(adapter)?)?;
    let config = adapter.peft_config().to_json(adapter.dims());
    let write_files = |d: &Path| -> Result<()> {
        for (name, bytes) in [
            (WEIGHTS_FILE, &weights[..]),
            (CONFIG_FILE, config.as_bytes()),
        ] {
            let path = d.join(name);
            write_atomic(&path, |w| {
                w.write_all(bytes)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
            })?;
        }
        Ok(())
    };
    if dir.is_dir() {
        return write_files(dir);
    }
    let tmp = temp_dir_for(dir)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Error::io(format!("removing stale {}", tmp.display()), e))?;
    }
    std::fs::create_dir_all(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let result = write_files(&tmp).and_then(|_| {
        std::fs::rename(&tmp, dir).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), dir.display()),
                e,
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn temp_dir_for(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!("adapter directory '{}' has no name", dir.display()))
    })?;
    let tmp = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    Ok(match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            p.join(tmp)
        }
        _ => PathBuf::from(tmp),
    })
}

/// Loads a PEFT adapter directory for a model of `dims`. Method, rank, alpha, targets come from
/// adapter_config.json; every tensor must be present with the expected shape, and nothing else may
/// be in the file.
pub fn load_peft_dir(dir: &Path, dims: &ModelDims) -> Result<AnyAdapter> {
    load_inner(dir, dims).map_err(|e| e.in_file(dir))
}

fn load_inner(dir: &Path, dims: &ModelDims) -> Result<AnyAdapter> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let config_text = String::from_utf8(read(CONFIG_FILE)?)
        .map_err(|_| Error::InvalidArgument(format!("{CONFIG_FILE} is not UTF-8")))?;
    let bytes = read(WEIGHTS_FILE)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{WEIGHTS_FILE}: {e}")))?;
    let mut file_keys: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    file_keys.sort();
    let config = PeftConfig::from_json(&config_text, dims, &file_keys)?;
    let meta = config.meta.clone();
    let mut adapter = match config.method {
        MethodConfig::Lora(c) => {
            let mut a = Lora::zeros(dims, c)?;
            a.meta = meta;
            AnyAdapter::Lora(a)
        }
        MethodConfig::Ia3(c) => {
            let mut a = Ia3::new(dims, c)?;
            a.meta = meta;
            AnyAdapter::Ia3(a)
        }
        MethodConfig::Prefix(c) => {
            let mut a = PrefixTuning::zeros(dims, c)?;
            a.meta = meta;
            AnyAdapter::Prefix(a)
        }
        MethodConfig::Prompt(c) => {
            let mut a = PromptTuning::zeros(dims, c)?;
            a.meta = meta;
            AnyAdapter::Prompt(a)
        }
    };
    fill_from_file(adapter.as_adapter_mut(), &st, &file_keys)?;
    Ok(adapter)
}

/// Copies every parameter from the file, after checking all of them.
fn fill_from_file(adapter: &mut dyn Adapter, st: &SafeTensors, file_keys: &[String]) -> Result<()> {
    let mut problems = Vec::new();
    let expected: BTreeSet<&str> = adapter.params().iter().map(|p| p.name()).collect();
    for p in adapter.params() {
        match st.tensor(p.name()) {
            Err(_) => problems.push(format!("missing tensor {} {:?}", p.name(), p.shape())),
            Ok(t) => {
                if t.shape() != p.shape() {
                    problems.push(format!(
                        "tensor {}: shape {:?}, expected {:?}",
                        p.name(),
                        t.shape(),
                        p.shape()
                    ));
                }
                if !matches!(
                    t.dtype(),
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
                ) {
                    problems.push(format!(
                        "tensor {}: dtype {:?} (supported: F32, F16, BF16, F64)",
                        p.name(),
                        t.dtype()
                    ));
                }
            }
        }
    }
    for k in file_keys.iter().filter(|k| !expected.contains(k.as_str())) {
        problems.push(format!(
            "unexpected tensor {k} (not implied by {CONFIG_FILE})"
        ));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the adapter does not fit the model ({} problem{}):\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )));
    }
    for i in 0..adapter.params().len() {
        let name = adapter.params().get(i).name().to_string();
        let t = st
            .tensor(&name)
            .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))?;
        let values = to_f32(t.dtype(), t.data(), &name)?;
        let data = match adapter.hf_row_permutation(i) {
            Some(heads) => {
                let rows = t.shape()[0];
                hf_to_gguf_rows(&values, rows, values.len() / rows, heads, &name)?
            }
            None => values,
        };
        adapter
            .params_mut()
            .get_mut(i)
            .data_mut()
            .copy_from_slice(&data);
    }
    Ok(())
}

fn to_f32(dtype: Dtype, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
    let size = dtype.bitsize() / 8;
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::InvalidArgument(format!(
            "tensor {name}: {} bytes is not a whole number of {dtype:?} values",
            bytes.len()
        )));
    }
    let chunks = bytes.chunks_exact(size);
    Ok(match dtype {
        Dtype::F32 => chunks
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => chunks
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => chunks
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        other => {
            return Err(Error::Unsupported(format!(
                "tensor {name}: dtype {other:?}"
            )))
        }
    })
}
