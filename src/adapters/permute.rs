//! The Q/K row permutation of GGUF `llama` files (FORMATS.md §3.4). convert_hf_to_gguf.py reorders
//! the rows of each head so that llama.cpp's adjacent-pair RoPE equals Hugging Face's half-split one:
//! `GGUF_row[h·hd + 2i + j] = HF_row[h·hd + j·hd/2 + i]`. Adapter tensors whose rows are output
//! features of q_proj/k_proj (LoRA B, IA3 output vectors) and prefix keys (per head channel) follow
//! the same map.

use crate::error::{Error, Result};

/// The Hugging Face row that lands at GGUF row `r` in a weight of `n_heads` heads of `head_dim` rows.
pub fn hf_row_of_gguf_row(r: usize, head_dim: usize) -> usize {
    let (h, w) = (r / head_dim, r % head_dim);
    h * head_dim + (w % 2) * (head_dim / 2) + w / 2
}

fn check(rows: usize, cols: usize, len: usize, n_heads: usize, what: &str) -> Result<usize> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::InvalidArgument(format!(
            "{what}: {len} values are not {rows} rows x {cols}"
        )));
    }
    if n_heads == 0 || !rows.is_multiple_of(n_heads) || !(rows / n_heads).is_multiple_of(2) {
        return Err(Error::InvalidArgument(format!(
            "{what}: {rows} rows do not split into {n_heads} heads of an even size"
        )));
    }
    Ok(rows / n_heads)
}

/// Rows of a row-major `[rows, cols]` matrix from Hugging Face order to GGUF order.
pub fn hf_to_gguf_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_heads: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let hd = check(rows, cols, data.len(), n_heads, what)?;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let src = hf_row_of_gguf_row(r, hd);
        out[r * cols..(r + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
    }
    Ok(out)
}

/// Rows of a row-major `[rows, cols]` matrix from GGUF order back to Hugging Face order.
pub fn gguf_to_hf_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    n_heads: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let hd = check(rows, cols, data.len(), n_heads, what)?;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let dst = hf_row_of_gguf_row(r, hd);
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_example_and_inverts() {
        // FORMATS.md §3.4: hd = 8, GGUF rows of head 0 = HF rows 0,4,1,5,2,6,3,7.
        let order: Vec<usize> = (0..8).map(|r| hf_row_of_gguf_row(r, 8)).collect();
        assert_eq!(order, [0, 4, 1, 5, 2, 6, 3, 7]);
        let data: Vec<f32> = (0..48).map(|v| v as f32).collect(); // 16 rows x 3, 2 heads
        let g = hf_to_gguf_rows(&data, 16, 3, 2, "t").unwrap();
        assert_eq!(&g[3..6], &data[12..15]); // GGUF row 1 = HF row 4
        assert_eq!(gguf_to_hf_rows(&g, 16, 3, 2, "t").unwrap(), data);
        assert!(hf_to_gguf_rows(&data, 16, 3, 3, "t").is_err());
        assert!(hf_to_gguf_rows(&data, 15, 3, 3, "t").is_err());
    }
}
