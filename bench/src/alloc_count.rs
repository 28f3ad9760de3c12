//! The global allocator (mimalloc) with an optional live-bytes counter, so a
//! mode can measure the heap its own structures hold (`idle_group_bytes`).
//! Counting is off unless a mode turns it on: then every allocation pays one
//! relaxed atomic add. It counts all threads, so measure single-threaded.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

pub struct CountingAlloc {
    inner: mimalloc::MiMalloc,
    enabled: AtomicBool,
    live_bytes: AtomicI64,
}

impl CountingAlloc {
    pub const fn new() -> CountingAlloc {
        CountingAlloc { inner: mimalloc::MiMalloc, enabled: AtomicBool::new(false), live_bytes: AtomicI64::new(0) }
    }

    /// Starts counting from zero.
    pub fn start(&self) {
        self.live_bytes.store(0, Ordering::SeqCst);
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Bytes allocated and not freed since `start` (frees of older blocks
    /// count too, so this can be negative).
    pub fn live_bytes(&self) -> i64 {
        self.live_bytes.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    #[inline]
    fn count(&self, delta: i64) {
        if self.enabled.load(Ordering::Relaxed) {
            self.live_bytes.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; counting only reads
// the layout.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size() as i64);
        self.inner.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.count(-(layout.size() as i64));
        self.inner.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size() as i64);
        self.inner.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(new_size as i64 - layout.size() as i64);
        self.inner.realloc(ptr, layout, new_size)
    }
}
