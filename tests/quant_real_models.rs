//! Do we dequantize every tensor of the real test models exactly as gguf-py does? For each
//! tensor, the sha256 of its little-endian f32 values (storage order) must equal the hash that
//! scripts/reference/dequant_hashes.py computed with gguf-py (fixtures
//! tests/fixtures/quant/dequant_sha256_*.json). Covers Q4_1, Q8_0, F32 (SmolLM2) and Q4_K, Q6_K,
//! Q5_0, Q8_0, F32 (Gemma 3). Decoding runs at the best SIMD level; tests/quant_simd.rs shows every
//! level gives the same bits.

use edgetune::gguf::{GgufFile, TensorInfo};
use edgetune::quant::dequantize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Elements decoded per call: whole rows, about this many.
const CHUNK_ELEMS: usize = 1 << 16;

fn tensor_sha256(file: &GgufFile, info: &TensorInfo) -> Result<String, String> {
    let data = file.tensor_data(info);
    let ne0 = *info.ne.first().ok_or("no dims")? as usize;
    let row_bytes =
        info.ty
            .row_bytes(ne0 as u64)
            .ok_or_else(|| format!("ne0 {ne0} is not whole {} blocks", info.ty))? as usize;
    let rows_per_chunk = (CHUNK_ELEMS / ne0).max(1);
    let mut values = vec![0f32; rows_per_chunk * ne0];
    let mut bytes = Vec::with_capacity(values.len() * 4);
    let mut hash = Sha256::new();
    for chunk in data.chunks(rows_per_chunk * row_bytes) {
        let out = &mut values[..chunk.len() / row_bytes * ne0];
        dequantize(info.ty, chunk, out).map_err(|e| e.to_string())?;
        bytes.clear();
        bytes.extend(out.iter().flat_map(|v| v.to_le_bytes()));
        hash.update(&bytes);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn check_model(model: &str, fixture: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models").join(model);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    let fixture_path = root.join("tests/fixtures/quant").join(fixture);
    let want: Value = std::fs::read(&fixture_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("{}: {e}", fixture_path.display()));
    let want = want.as_object().expect("fixture is a JSON object");
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let tensors = &file.header().tensors;
    assert_eq!(
        tensors.len(),
        want.len(),
        "{model}: tensor count vs fixture"
    );
    let mut failures = Vec::new();
    for info in tensors {
        let Some(expected) = want.get(&info.name) else {
            failures.push(format!("{}: not in the fixture", info.name));
            continue;
        };
        assert_eq!(
            expected["type"].as_str(),
            Some(info.ty.name()),
            "{}",
            info.name
        );
        assert_eq!(
            expected["elements"].as_u64(),
            Some(info.n_elements()),
            "{}",
            info.name
        );
        match tensor_sha256(&file, info) {
            Ok(h) if Some(h.as_str()) == expected["sha256"].as_str() => {}
            Ok(h) => failures.push(format!(
                "{} ({}): sha256 {h}, gguf-py {}",
                info.name, info.ty, expected["sha256"]
            )),
            Err(e) => failures.push(format!("{} ({}): {e}", info.name, info.ty)),
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: {} of {} tensors differ from gguf-py:\n{}",
        failures.len(),
        tensors.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_q4_1_matches_gguf_py() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "dequant_sha256_smollm2.json",
    );
}

#[test]
fn gemma3_q4_k_m_matches_gguf_py() {
    check_model("gemma-3-270m-q4_k_m.gguf", "dequant_sha256_gemma3.json");
}
