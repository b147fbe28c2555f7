//! Small files travel between the pool and the thread that owns the archive in batches, so that
//! channel hand-offs do not dominate trees of small files. One rule for backup and restore.

/// Files up to this size are read (or written) whole in memory; larger ones are streamed.
pub const INLINE_MAX: u64 = 1 << 20;
/// A batch closes at this many files…
pub const BATCH_FILES: usize = 64;
/// …or at this many bytes of small-file content.
pub const BATCH_BYTES: u64 = INLINE_MAX;

/// Collects items into batches of at most [`BATCH_FILES`] items or [`BATCH_BYTES`] bytes.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    bytes: u64,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            items: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Batcher<T> {
    /// Adds an item of `bytes` bytes (counted up to [`INLINE_MAX`]); returns the batch when it
    /// is full.
    pub fn add(&mut self, item: T, bytes: u64) -> Option<Vec<T>> {
        self.items.push(item);
        self.bytes += bytes.min(INLINE_MAX);
        if self.items.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES {
            return Some(self.take());
        }
        None
    }

    /// The items collected so far.
    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
