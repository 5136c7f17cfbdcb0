//! Where optimizer state lives: the [`StateStore`] trait, the [`StateLayout`] it serves, and the
//! all-in-RAM [`RamStore`].
//!
//! The update rule never sees where its state is. Each parameter is cut into chunks of
//! `chunk_elems` consecutive elements (a multiple of 256, so 8-bit blocks never straddle two
//! chunks); the state of one chunk (m and v, or u8 codes and block absmax, ...) is one *record*
//! of bytes, and the rule asks the store for records one at a time in walk order (parameters in
//! registration order, chunks in order). A RAM store hands out slices of one allocation; a paged
//! store ([`super::paged::PagedStore`]) keeps a budget's worth of records in RAM and the rest in
//! a file. Records start at multiples of 8 bytes, so f32 slots inside them are aligned.

use crate::error::{Error, Result};
use std::ops::Range;

/// Element type of one slot of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotType {
    F32,
    U8,
}

impl SlotType {
    pub fn size(self) -> usize {
        match self {
            SlotType::F32 => 4,
            SlotType::U8 => 1,
        }
    }
}

/// One array inside a chunk's record: `len` elements of `ty`, named as in checkpoints
/// (`exp_avg`, `state1`, `absmax1`, ...). The whole-parameter tensor of a slot is the
/// concatenation of that slot over the parameter's chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: &'static str,
    pub ty: SlotType,
    pub len: usize,
}

/// Bytes of a record holding `slots` in order (f32 slots must come first, so they stay
/// aligned), padded to a multiple of 8.
pub fn record_bytes(slots: &[Slot]) -> usize {
    let bytes: usize = slots.iter().map(|s| s.len * s.ty.size()).sum();
    bytes.div_ceil(8) * 8
}

/// Where each parameter's chunks are and how big each record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLayout {
    chunk_elems: usize,
    /// Per parameter: (elements, first global chunk index, number of chunks).
    params: Vec<(usize, usize, usize)>,
    /// Per global chunk: (byte offset in the packed image, record bytes).
    records: Vec<(u64, usize)>,
    max_record_bytes: usize,
    total_bytes: u64,
}

impl StateLayout {
    /// A layout for parameters of `param_lens` elements cut into chunks of `chunk_elems`;
    /// `record_bytes(param_len, chunk_len)` gives the state bytes of one chunk (a multiple of 8).
    pub fn new(
        param_lens: impl IntoIterator<Item = usize>,
        chunk_elems: usize,
        record_bytes: impl Fn(usize, usize) -> usize,
    ) -> Result<StateLayout> {
        if chunk_elems == 0 || !chunk_elems.is_multiple_of(256) {
            return Err(Error::InvalidArgument(format!(
                "optimizer state chunk of {chunk_elems} elements: must be a positive multiple \
                 of 256"
            )));
        }
        let mut params = Vec::new();
        let mut records = Vec::new();
        let mut offset = 0u64;
        let mut max_record_bytes = 0;
        for len in param_lens {
            let chunks = len.div_ceil(chunk_elems);
            params.push((len, records.len(), chunks));
            for k in 0..chunks {
                let chunk_len = chunk_elems.min(len - k * chunk_elems);
                let bytes = record_bytes(len, chunk_len);
                if !bytes.is_multiple_of(8) {
                    return Err(Error::InvalidArgument(format!(
                        "optimizer state record of {bytes} bytes is not a multiple of 8"
                    )));
                }
                records.push((offset, bytes));
                offset += bytes as u64;
                max_record_bytes = max_record_bytes.max(bytes);
            }
        }
        Ok(StateLayout {
            chunk_elems,
            params,
            records,
            max_record_bytes,
            total_bytes: offset,
        })
    }

    pub fn chunk_elems(&self) -> usize {
        self.chunk_elems
    }

    pub fn param_count(&self) -> usize {
        self.params.len()
    }

    /// Elements of parameter `param`.
    pub fn param_len(&self, param: usize) -> usize {
        self.params[param].0
    }

    /// Global chunk indices of parameter `param`.
    pub fn chunks_of(&self, param: usize) -> Range<usize> {
        let (_, first, n) = self.params[param];
        first..first + n
    }

    /// Element range inside its parameter of the `k`-th chunk of parameter `param`.
    pub fn chunk_range(&self, param: usize, k: usize) -> Range<usize> {
        let len = self.params[param].0;
        let start = k * self.chunk_elems;
        start..len.min(start + self.chunk_elems)
    }

    pub fn chunk_count(&self) -> usize {
        self.records.len()
    }

    /// Byte offset of a chunk's record in the packed image of all records (walk order).
    pub fn record_offset(&self, chunk: usize) -> u64 {
        self.records[chunk].0
    }

    pub fn record_len(&self, chunk: usize) -> usize {
        self.records[chunk].1
    }

    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Bytes of all records together: the state size.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub(crate) fn check_chunk(&self, chunk: usize) -> Result<()> {
        if chunk < self.records.len() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "optimizer state chunk {chunk} out of range ({} chunks)",
                self.records.len()
            )))
        }
    }
}

/// Storage of optimizer state records. The rule asks for one record at a time; a returned slice
/// is valid until the next call. Implementations must return records zero-filled before their
/// first write (zero is the initial state of every rule here).
pub trait StateStore: Send {
    fn layout(&self) -> &StateLayout;

    /// The record of global chunk `chunk`, to read and modify (marks it modified).
    fn record_mut(&mut self, chunk: usize) -> Result<&mut [u8]>;

    /// The record of global chunk `chunk`, read only.
    fn record(&mut self, chunk: usize) -> Result<&[u8]>;

    /// Tells the store which chunks will be asked for next, in order (read-ahead); a hint.
    fn will_need(&mut self, _chunks: Range<usize>) -> Result<()> {
        Ok(())
    }

    /// Writes back anything held only in RAM (a paged store's modified pages).
    fn flush(&mut self) -> Result<()>;

    /// Bytes of RAM the store holds for state now.
    fn resident_bytes(&self) -> usize;

    /// Page traffic, for stores that page.
    fn paging_stats(&self) -> Option<PagingStats> {
        None
    }
}

/// Page traffic of a paging store since its creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingStats {
    pub hits: u64,
    pub misses: u64,
    pub pages_read: u64,
    pub pages_written: u64,
}

/// Every record in one RAM allocation.
pub struct RamStore {
    layout: StateLayout,
    words: Vec<u64>,
}

impl RamStore {
    pub fn new(layout: StateLayout) -> Result<RamStore> {
        let words = usize::try_from(layout.total_bytes() / 8).map_err(|_| {
            Error::InvalidArgument(format!(
                "optimizer state of {} bytes does not fit in memory",
                layout.total_bytes()
            ))
        })?;
        Ok(RamStore {
            layout,
            words: vec![0u64; words],
        })
    }

    fn words_of(&self, chunk: usize) -> Result<Range<usize>> {
        self.layout.check_chunk(chunk)?;
        let start = (self.layout.record_offset(chunk) / 8) as usize;
        Ok(start..start + self.layout.record_len(chunk) / 8)
    }
}

impl StateStore for RamStore {
    fn layout(&self) -> &StateLayout {
        &self.layout
    }

    fn record_mut(&mut self, chunk: usize) -> Result<&mut [u8]> {
        let range = self.words_of(chunk)?;
        Ok(words_as_bytes_mut(&mut self.words[range]))
    }

    fn record(&mut self, chunk: usize) -> Result<&[u8]> {
        let range = self.words_of(chunk)?;
        Ok(words_as_bytes(&self.words[range]))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn resident_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The bytes of a word buffer (the backing of every record, so records are 8-aligned).
pub(crate) fn words_as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: the pointer comes from a valid `&mut [u64]` of `len` bytes, u8 has alignment 1
    // and every byte pattern is a valid u8 (and every u64 is valid whatever bytes are written);
    // the returned slice reborrows `words` mutably, so nothing else aliases it.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

pub(crate) fn words_as_bytes(words: &[u64]) -> &[u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: as in `words_as_bytes_mut`, read only.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

/// Views 4-aligned bytes (a slot inside a record) as f32 values.
pub(crate) fn bytes_as_f32_mut(bytes: &mut [u8]) -> Result<&mut [f32]> {
    // SAFETY: every bit pattern is a valid f32, so reinterpreting initialised bytes is sound;
    // `align_to_mut` only puts correctly aligned, in-bounds elements in the middle part.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<f32>() };
    if !head.is_empty() || !tail.is_empty() {
        return Err(Error::InvalidArgument(
            "optimizer state slot is not 4-byte aligned".to_string(),
        ));
    }
    Ok(body)
}

#[cfg(test)]
fn bytes_as_f32(bytes: &[u8]) -> Result<&[f32]> {
    // SAFETY: as in `bytes_as_f32_mut`, read only.
    let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
    if !head.is_empty() || !tail.is_empty() {
        return Err(Error::InvalidArgument(
            "optimizer state slot is not 4-byte aligned".to_string(),
        ));
    }
    Ok(body)
}

/// Two f32 slots of `n` elements at the start of a record (m and v, state1 and state2).
pub(crate) fn f32_pair_mut(record: &mut [u8], n: usize) -> Result<(&mut [f32], &mut [f32])> {
    if record.len() < 8 * n {
        return Err(record_too_small(record.len(), 8 * n));
    }
    let (a, rest) = record.split_at_mut(4 * n);
    Ok((bytes_as_f32_mut(a)?, bytes_as_f32_mut(&mut rest[..4 * n])?))
}

pub(crate) fn record_too_small(have: usize, need: usize) -> Error {
    Error::InvalidArgument(format!(
        "optimizer state record of {have} bytes, the rule needs {need}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_cuts_params_into_chunks() {
        let layout = StateLayout::new([1, 0, 600], 256, |_, n| n * 8).unwrap();
        assert_eq!(layout.chunk_count(), 4); // 1 + 0 + 3
        assert_eq!(layout.chunks_of(2), 1..4);
        assert_eq!(layout.chunk_range(2, 2), 512..600);
        assert_eq!(layout.record_offset(3), 8 + 2 * 256 * 8);
        assert_eq!(layout.record_len(3), 88 * 8);
        assert_eq!(layout.total_bytes(), (1 + 600) * 8);
        assert!(StateLayout::new([1], 100, |_, n| n * 8).is_err());
        assert!(StateLayout::new([1], 256, |_, n| n * 4).is_err());
    }

    #[test]
    fn ram_store_records_are_zeroed_aligned_and_separate() {
        let layout = StateLayout::new([300, 5], 256, |_, n| (n * 8).div_ceil(8) * 8).unwrap();
        let mut store = RamStore::new(layout).unwrap();
        let (m, v) = f32_pair_mut(store.record_mut(1).unwrap(), 44).unwrap();
        assert!(m.iter().chain(v.iter()).all(|&x| x == 0.0));
        m[0] = 1.5;
        v[43] = 2.5;
        assert!(store.record(0).unwrap().iter().all(|&b| b == 0));
        let rec = store.record(1).unwrap();
        assert_eq!(bytes_as_f32(rec).unwrap()[0], 1.5);
        assert_eq!(bytes_as_f32(rec).unwrap()[87], 2.5);
        assert!(store.record(3).is_err());
    }
}
