//! Optimizer state on disk: a safetensors file (FORMATS.md Part II §6), written atomically.
//!
//! One 1-D tensor per parameter and state slot, named `<param>.<slot>` with torch's and
//! bitsandbytes' slot names (`exp_avg`, `exp_avg_sq`, `momentum_buffer`, `state1`, `state2`,
//! `absmax1`, `absmax2`), so `safetensors.torch.load_file` reads it as is. `__metadata__` holds
//! `format` = `edgetune-optimizer`, `version` = `1`, `step` (steps taken) and `rule` (the rule
//! and its hyper-parameters as JSON). The file does not depend on the store or the chunk size:
//! a slot's tensor is the concatenation of that slot over the parameter's chunks.
//!
//! Saving and loading stream through the store one record at a time, so a paged store never
//! needs the whole state in RAM.

use super::params::{ParamId, ParamSet};
use super::rules::Rule;
use super::store::{SlotType, StateStore};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const FORMAT: &str = "edgetune-optimizer";
pub const VERSION: &str = "1";

/// One tensor of the file: which parameter and slot, dtype, element count.
struct TensorPlan {
    name: String,
    param: usize,
    slot: usize,
    ty: SlotType,
    len: usize,
}

fn dtype_name(ty: SlotType) -> &'static str {
    match ty {
        SlotType::F32 => "F32",
        SlotType::U8 => "U8",
    }
}

/// The tensors of a state, in safetensors writer order (dtype descending, then name).
fn plan(rule: &Rule, params: &ParamSet, store: &dyn StateStore) -> Vec<TensorPlan> {
    let layout = store.layout();
    let mut out = Vec::new();
    for (id, spec) in params.iter() {
        let slots = rule.slots(spec.len, layout.chunk_elems().min(spec.len));
        for (s, slot) in slots.iter().enumerate() {
            let len = layout
                .chunks_of(id.0)
                .enumerate()
                .map(|(k, _)| rule.slots(spec.len, layout.chunk_range(id.0, k).len())[s].len)
                .sum();
            out.push(TensorPlan {
                name: format!("{}.{}", spec.name, slot.name),
                param: id.0,
                slot: s,
                ty: slot.ty,
                len,
            });
        }
    }
    out.sort_by(|a, b| {
        (b.ty == SlotType::F32)
            .cmp(&(a.ty == SlotType::F32))
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// Byte range of slot `slot` inside the record of chunk `k` of parameter `param`.
fn slot_bytes(
    rule: &Rule,
    store: &dyn StateStore,
    param_len: usize,
    param: usize,
    k: usize,
    slot: usize,
) -> std::ops::Range<usize> {
    let chunk_len = store.layout().chunk_range(param, k).len();
    let slots = rule.slots(param_len, chunk_len);
    let start: usize = slots[..slot].iter().map(|s| s.len * s.ty.size()).sum();
    start..start + slots[slot].len * slots[slot].ty.size()
}

/// Writes the state to `path` (temp file + rename).
pub(crate) fn save(
    path: &Path,
    rule: &Rule,
    params: &ParamSet,
    store: &mut dyn StateStore,
    step: u64,
) -> Result<()> {
    let tensors = plan(rule, params, store);
    let mut header = serde_json::Map::new();
    let rule_json = serde_json::to_string(rule)
        .map_err(|e| Error::InvalidArgument(format!("optimizer rule to JSON: {e}")))?;
    header.insert(
        "__metadata__".to_string(),
        serde_json::json!({
            "format": FORMAT, "version": VERSION, "step": step.to_string(), "rule": rule_json,
        }),
    );
    let mut offset = 0usize;
    for t in &tensors {
        let bytes = t.len * t.ty.size();
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.ty), "shape": [t.len], "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&header)
        .map_err(|e| Error::InvalidArgument(format!("optimizer state header: {e}")))?;
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    crate::util::write_atomic(path, |w| {
        let werr = |e| Error::io(format!("writing optimizer state {}", path.display()), e);
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(werr)?;
        w.write_all(header.as_bytes()).map_err(werr)?;
        let mut swapped = Vec::new();
        for t in &tensors {
            let param_len = params.get(ParamId(t.param)).map_or(0, |s| s.len);
            for (k, chunk) in store.layout().chunks_of(t.param).enumerate() {
                let range = slot_bytes(rule, store, param_len, t.param, k, t.slot);
                let bytes = &store.record(chunk)?[range];
                if cfg!(target_endian = "big") && t.ty == SlotType::F32 {
                    swapped.clear();
                    swapped.extend_from_slice(bytes);
                    swapped.chunks_exact_mut(4).for_each(|c| c.reverse());
                    w.write_all(&swapped).map_err(werr)?;
                } else {
                    w.write_all(bytes).map_err(werr)?;
                }
            }
        }
        Ok(())
    })
}

/// Reads a state written by [`save`] into `store`; returns the step count. The rule (with its
/// hyper-parameters) and every tensor name, dtype and shape must match; all mismatches are
/// reported at once. On error the store may be partly overwritten.
pub(crate) fn load(
    path: &Path,
    rule: &Rule,
    params: &ParamSet,
    store: &mut dyn StateStore,
) -> Result<u64> {
    let in_file = |e: Error| e.in_file(path);
    let file = File::open(path)
        .map_err(|e| Error::io(format!("opening optimizer state {}", path.display()), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let rerr = |e| Error::io(format!("reading optimizer state {}", path.display()), e);
    let mut n = [0u8; 8];
    r.read_exact(&mut n).map_err(rerr)?;
    let header_len = u64::from_le_bytes(n);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(in_file(bad(format!(
            "header length {header_len} does not fit a file of {file_len} bytes"
        ))));
    }
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header).map_err(rerr)?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| in_file(bad(format!("header: {e}"))))?;
    let meta = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .ok_or_else(|| in_file(bad("no __metadata__".to_string())))?;
    let field = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if field("format") != FORMAT || field("version") != VERSION {
        return Err(in_file(bad(format!(
            "format {:?} version {:?}, expected {FORMAT:?} version {VERSION:?}",
            field("format"),
            field("version")
        ))));
    }
    let step: u64 = field("step")
        .parse()
        .map_err(|_| in_file(bad(format!("step {:?} is not a count", field("step")))))?;
    // Compared as JSON text: serialization is deterministic (shortest round-trip floats),
    // while parsing floats back is not guaranteed to be correctly rounded.
    let ours = serde_json::to_string(rule)
        .map_err(|e| Error::InvalidArgument(format!("optimizer rule to JSON: {e}")))?;
    if field("rule") != ours {
        return Err(in_file(bad(format!(
            "state was saved by {}, this optimizer is {ours}",
            field("rule")
        ))));
    }

    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let tensors = plan(rule, params, store);
    let mut problems = Vec::new();
    let mut located = Vec::new();
    for t in &tensors {
        let Some(info) = header.get(&t.name) else {
            problems.push(format!("{} is missing", t.name));
            continue;
        };
        let offsets: Vec<u64> = info["data_offsets"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        let shape_ok = info["shape"] == serde_json::json!([t.len]);
        let bytes = (t.len * t.ty.size()) as u64;
        if info["dtype"] != dtype_name(t.ty) || !shape_ok {
            problems.push(format!(
                "{} is {} {}, expected {} [{}]",
                t.name,
                info["dtype"],
                info["shape"],
                dtype_name(t.ty),
                t.len
            ));
        } else if offsets.len() != 2 || offsets[1] - offsets[0] != bytes || offsets[1] > data_len {
            problems.push(format!(
                "{} has data offsets {} for {bytes} bytes in a {data_len}-byte buffer",
                t.name, info["data_offsets"]
            ));
        } else {
            located.push((t, offsets[0]));
        }
    }
    let expected: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    for name in header.keys() {
        if name != "__metadata__" && !expected.contains(&name.as_str()) {
            problems.push(format!("{name} is not a state tensor of these parameters"));
        }
    }
    if !problems.is_empty() {
        return Err(in_file(bad(format!(
            "optimizer state does not match: {}",
            problems.join("; ")
        ))));
    }

    located.sort_by_key(|&(_, off)| off);
    for (t, off) in located {
        r.seek(SeekFrom::Start(data_start + off)).map_err(rerr)?;
        let param_len = params.get(ParamId(t.param)).map_or(0, |s| s.len);
        for (k, chunk) in store.layout().chunks_of(t.param).enumerate() {
            let range = slot_bytes(rule, store, param_len, t.param, k, t.slot);
            let dst = &mut store.record_mut(chunk)?[range];
            r.read_exact(dst).map_err(rerr)?;
            if cfg!(target_endian = "big") && t.ty == SlotType::F32 {
                dst.chunks_exact_mut(4).for_each(|c| c.reverse());
            }
        }
    }
    Ok(step)
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}
