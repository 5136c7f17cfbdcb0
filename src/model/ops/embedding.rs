//! Token embedding lookup. Rows of `token_embd` are decoded on demand from the zero-copy view, one
//! row per token, so the table is never dequantized as a whole.

use super::check_len;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::weights::WeightData;

/// The embedding table `[n_vocab, n_embd]` as stored in the file.
pub struct EmbeddingTable<'a> {
    pub data: WeightData<'a>,
    pub n_vocab: usize,
    pub n_embd: usize,
}

impl EmbeddingTable<'_> {
    /// Decodes row `token` into `out[n_embd]`.
    pub fn row(&self, token: u32, out: &mut [f32]) -> Result<()> {
        check_len("embedding row", out.len(), &[self.n_embd])?;
        let t = token as usize;
        if t >= self.n_vocab {
            return Err(Error::InvalidArgument(format!(
                "token id {token} is outside the vocabulary of {} tokens",
                self.n_vocab
            )));
        }
        match &self.data {
            WeightData::Ggml { ty, bytes } => {
                let row_bytes = ty.row_bytes(self.n_embd as u64).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "token_embd: n_embd {} is not a multiple of the {ty} block size {}",
                        self.n_embd,
                        ty.block_size()
                    ))
                })? as usize;
                let row = bytes
                    .get(t * row_bytes..(t + 1) * row_bytes)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "token_embd: {} bytes cannot hold row {t} of {row_bytes} bytes",
                            bytes.len()
                        ))
                    })?;
                if *ty == GgmlType::F32 {
                    for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    Ok(())
                } else {
                    crate::quant::dequantize(*ty, row, out)
                        .map_err(|e| Error::Quant(format!("token_embd row {t}: {e}")))
                }
            }
            WeightData::Nf4(view) => view
                .dequantize_range(t * self.n_embd, out)
                .map_err(|e| Error::Quant(format!("token_embd row {t}: {e}"))),
        }
    }
}

/// `out[n, d] = table[tokens[n]]`.
pub fn embedding_forward(
    out: &mut [f32], // [n, d]
    tokens: &[u32],  // [n]
    table: &EmbeddingTable,
) -> Result<()> {
    let d = table.n_embd;
    check_len("embedding out", out.len(), &[tokens.len(), d])?;
    for (row, &t) in out.chunks_exact_mut(d).zip(tokens) {
        table.row(t, row)?;
    }
    Ok(())
}

/// `dtable[tokens[i]] += dout[i]` for a trainable table `[n_vocab, d]` (the base table is frozen;
/// this serves learned embeddings such as prompt-tuning tokens).
pub fn embedding_backward(
    dtable: &mut [f32], // [n_vocab, d]
    dout: &[f32],       // [n, d]
    tokens: &[u32],     // [n]
    d: usize,
) -> Result<()> {
    check_len("embedding dout", dout.len(), &[tokens.len(), d])?;
    if d == 0 || !dtable.len().is_multiple_of(d) {
        return Err(Error::InvalidArgument(format!(
            "embedding dtable: {} values are not whole rows of {d}",
            dtable.len()
        )));
    }
    let n_vocab = dtable.len() / d;
    for (g, &t) in dout.chunks_exact(d).zip(tokens) {
        let t = t as usize;
        if t >= n_vocab {
            return Err(Error::InvalidArgument(format!(
                "token id {t} is outside the table of {n_vocab} rows"
            )));
        }
        for (a, &b) in dtable[t * d..(t + 1) * d].iter_mut().zip(g) {
            *a += b;
        }
    }
    Ok(())
}
