//! [`PagedStore`]: optimizer state in fixed-size pages, at most a byte budget of them in RAM
//! (least recently used evicted first, written back only if modified), the rest in a state file
//! preallocated at creation.
//!
//! A page holds one chunk's record (see [`super::store`]), and the file holds the records
//! packed in walk order, so reading ahead in file order is reading ahead in the order the
//! optimizer walks. On a miss the store reads the missing record and up to `readahead_pages - 1`
//! following non-resident ones in one sequential pass. When the whole state fits the budget,
//! pages are read once and stay; otherwise every step reads and writes each page once (the
//! cyclic walk defeats any cache), which is the price of the budget.

use super::store::{words_as_bytes, words_as_bytes_mut, PagingStats, StateLayout, StateStore};
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// How to page: where the state file goes and how much RAM the pages may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagedConfig {
    /// The state file (created or truncated; a scratch file, not a checkpoint).
    pub path: PathBuf,
    /// RAM for pages, in bytes; at least one page.
    pub budget_bytes: usize,
    /// Pages read per miss (the missing one and those after it), at least 1.
    pub readahead_pages: usize,
    /// Keep the state file when the store is dropped (removed by default).
    pub keep_file: bool,
}

impl PagedConfig {
    pub fn new(path: impl Into<PathBuf>, budget_bytes: usize) -> PagedConfig {
        PagedConfig {
            path: path.into(),
            budget_bytes,
            readahead_pages: 4,
            keep_file: false,
        }
    }
}

const NIL: usize = usize::MAX;

struct Frame {
    words: Vec<u64>,
    chunk: usize,
    dirty: bool,
    /// LRU list links (towards older / newer).
    older: usize,
    newer: usize,
}

pub struct PagedStore {
    layout: StateLayout,
    file: File,
    config: PagedConfig,
    frame_words: usize,
    max_frames: usize,
    frames: Vec<Frame>,
    /// Per chunk: the frame holding it, or NIL.
    frame_of: Vec<usize>,
    /// Least and most recently used frames.
    oldest: usize,
    newest: usize,
    stats: PagingStats,
}

impl PagedStore {
    /// Creates the state file (zero-filled: the initial state) and an empty page cache.
    pub fn create(layout: StateLayout, config: PagedConfig) -> Result<PagedStore> {
        let frame_bytes = layout.max_record_bytes().max(8);
        let max_frames = config.budget_bytes / frame_bytes;
        if max_frames == 0 {
            return Err(Error::InvalidArgument(format!(
                "paged optimizer state: budget of {} bytes is smaller than one page ({} bytes)",
                config.budget_bytes, frame_bytes
            )));
        }
        if config.readahead_pages == 0 {
            return Err(Error::InvalidArgument(
                "paged optimizer state: readahead_pages must be at least 1".to_string(),
            ));
        }
        let path = config.path.clone();
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io("creating optimizer state file", e))?;
        // Write the zeros rather than set_len: the disk space is then really reserved, and a
        // full disk fails here rather than in the middle of training.
        let zeros = vec![0u8; 1 << 20];
        let mut left = layout.total_bytes();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])
                .map_err(|e| io("preallocating optimizer state file", e))?;
            left -= n as u64;
        }
        let chunks = layout.chunk_count();
        Ok(PagedStore {
            frame_words: frame_bytes / 8,
            max_frames,
            frames: Vec::new(),
            frame_of: vec![NIL; chunks],
            oldest: NIL,
            newest: NIL,
            stats: PagingStats::default(),
            layout,
            file,
            config,
        })
    }

    pub fn stats(&self) -> PagingStats {
        self.stats
    }

    /// Pages the budget allows in RAM.
    pub fn max_resident_pages(&self) -> usize {
        self.max_frames
    }

    fn frame_for(&mut self, chunk: usize) -> Result<usize> {
        self.layout.check_chunk(chunk)?;
        let f = self.frame_of[chunk];
        if f != NIL {
            self.stats.hits += 1;
            self.touch(f);
            return Ok(f);
        }
        self.stats.misses += 1;
        // Read ahead: the missing chunk and the non-resident ones right after it, in one
        // sequential pass (they are contiguous in the file).
        let limit = self
            .config
            .readahead_pages
            .min(self.max_frames)
            .min(self.layout.chunk_count() - chunk);
        let run = (chunk..chunk + limit)
            .take_while(|&c| c == chunk || self.frame_of[c] == NIL)
            .count();
        // Frames first (evicting may write back and move the file position), then one seek
        // and sequential reads.
        let mut frames = Vec::with_capacity(run);
        for _ in 0..run {
            frames.push(self.free_frame()?);
        }
        let offset = self.layout.record_offset(chunk);
        let seek = self.file.seek(SeekFrom::Start(offset));
        let mut first = NIL;
        for (i, &f) in frames.iter().enumerate() {
            let c = chunk + i;
            let len = self.layout.record_len(c);
            let bytes = &mut words_as_bytes_mut(&mut self.frames[f].words)[..len];
            let read = match &seek {
                Ok(_) => self.file.read_exact(bytes),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            if let Err(e) = read {
                // These frames were unlinked by `free_frame` and hold no chunk: back in the
                // list as spares.
                for &spare in &frames[i..] {
                    self.link_newest(spare);
                }
                return Err(self.io_error("reading", e));
            }
            self.stats.pages_read += 1;
            self.frames[f].chunk = c;
            self.frames[f].dirty = false;
            self.frame_of[c] = f;
            self.link_newest(f);
            if c == chunk {
                first = f;
            }
        }
        Ok(first)
    }

    /// A frame not in the LRU list, evicting (and writing back) the oldest if the budget is
    /// used up.
    fn free_frame(&mut self) -> Result<usize> {
        if self.frames.len() < self.max_frames {
            self.frames.push(Frame {
                words: vec![0u64; self.frame_words],
                chunk: NIL,
                dirty: false,
                older: NIL,
                newer: NIL,
            });
            return Ok(self.frames.len() - 1);
        }
        let f = self.oldest;
        if f == NIL {
            return Err(Error::InvalidArgument(
                "paged optimizer state: no page to evict".to_string(),
            ));
        }
        self.write_back(f)?;
        let c = self.frames[f].chunk;
        if c != NIL {
            self.frame_of[c] = NIL;
        }
        self.frames[f].chunk = NIL;
        self.unlink(f);
        Ok(f)
    }

    fn write_back(&mut self, f: usize) -> Result<()> {
        let frame = &self.frames[f];
        if !frame.dirty || frame.chunk == NIL {
            return Ok(());
        }
        let (offset, len) = (
            self.layout.record_offset(frame.chunk),
            self.layout.record_len(frame.chunk),
        );
        let bytes = &words_as_bytes(&frame.words)[..len];
        let result = self
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(bytes));
        result.map_err(|e| self.io_error("writing", e))?;
        self.frames[f].dirty = false;
        self.stats.pages_written += 1;
        Ok(())
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(
            format!("{what} optimizer state file {}", self.config.path.display()),
            e,
        )
    }

    fn touch(&mut self, f: usize) {
        if self.newest != f {
            self.unlink(f);
            self.link_newest(f);
        }
    }

    fn unlink(&mut self, f: usize) {
        let (older, newer) = (self.frames[f].older, self.frames[f].newer);
        if older != NIL {
            self.frames[older].newer = newer;
        } else if self.oldest == f {
            self.oldest = newer;
        }
        if newer != NIL {
            self.frames[newer].older = older;
        } else if self.newest == f {
            self.newest = older;
        }
        self.frames[f].older = NIL;
        self.frames[f].newer = NIL;
    }

    fn link_newest(&mut self, f: usize) {
        self.frames[f].older = self.newest;
        self.frames[f].newer = NIL;
        if self.newest != NIL {
            self.frames[self.newest].newer = f;
        } else {
            self.oldest = f;
        }
        self.newest = f;
    }
}

impl StateStore for PagedStore {
    fn layout(&self) -> &StateLayout {
        &self.layout
    }

    fn record_mut(&mut self, chunk: usize) -> Result<&mut [u8]> {
        let f = self.frame_for(chunk)?;
        let len = self.layout.record_len(chunk);
        let frame = &mut self.frames[f];
        frame.dirty = true;
        Ok(&mut words_as_bytes_mut(&mut frame.words)[..len])
    }

    fn record(&mut self, chunk: usize) -> Result<&[u8]> {
        let f = self.frame_for(chunk)?;
        let len = self.layout.record_len(chunk);
        Ok(&words_as_bytes(&self.frames[f].words)[..len])
    }

    fn flush(&mut self) -> Result<()> {
        let mut dirty: Vec<usize> = (0..self.frames.len())
            .filter(|&f| self.frames[f].dirty)
            .collect();
        dirty.sort_by_key(|&f| self.frames[f].chunk);
        for f in dirty {
            self.write_back(f)?;
        }
        Ok(())
    }

    fn resident_bytes(&self) -> usize {
        self.frames.len() * self.frame_words * 8
    }

    fn paging_stats(&self) -> Option<PagingStats> {
        Some(self.stats)
    }
}

impl Drop for PagedStore {
    fn drop(&mut self) {
        if !self.config.keep_file {
            // Best effort: the file is scratch, its loss is harmless.
            let _ = std::fs::remove_file(&self.config.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::store::RamStore;

    /// Random writes through a small paged store and a RAM store read back the same.
    #[test]
    fn paged_matches_ram_under_random_access() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new([1000, 3, 2600, 256], 256, |_, n| n * 8).unwrap();
        let total = layout.chunk_count();
        let mut config = PagedConfig::new(dir.path().join("state"), 3 * 256 * 8);
        config.readahead_pages = 2;
        let mut paged = PagedStore::create(layout.clone(), config).unwrap();
        let mut ram = RamStore::new(layout).unwrap();
        let mut x = 12345u64;
        for i in 0..2000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = (x >> 33) as usize % total;
            let a = paged.record_mut(c).unwrap();
            let pos = (x >> 13) as usize % a.len();
            a[pos] = a[pos].wrapping_add(i as u8);
            let b = ram.record_mut(c).unwrap();
            b[pos] = b[pos].wrapping_add(i as u8);
            assert!(paged.resident_bytes() <= 3 * 256 * 8);
        }
        for c in 0..total {
            assert_eq!(
                paged.record(c).unwrap(),
                ram.record(c).unwrap(),
                "chunk {c}"
            );
        }
        let stats = paged.stats();
        assert!(stats.pages_written > 0 && stats.pages_read > stats.misses / 2);
        paged.flush().unwrap();
        let path = paged.config.path.clone();
        drop(paged);
        assert!(!path.exists());
    }

    #[test]
    fn budget_below_one_page_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new([4096], 4096, |_, n| n * 8).unwrap();
        let err = PagedStore::create(layout, PagedConfig::new(dir.path().join("s"), 1000))
            .err()
            .unwrap();
        assert!(err.to_string().contains("32768"), "{err}");
    }
}
