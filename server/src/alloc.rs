//! The process allocator, guarded against allocation-size attacks.
//!
//! The kafka-protocol crate pre-sizes arrays from the length a client declares
//! (`Vec::with_capacity(n)`) before it has read a single element. A crafted request declaring
//! 2^31 elements asks for hundreds of GiB; the system allocator refuses and Rust aborts the whole
//! process. No legitimate allocation here comes near 1 GiB (frames are capped far below), so
//! such requests are served with an address-space-only mapping (`MAP_NORESERVE`): nothing is
//! touched, the decoder fails on the missing elements a moment later, the mapping is released,
//! and the connection is closed with a logged reason instead of the server dying.
//!
//! This is the only module allowed `unsafe`: implementing `GlobalAlloc` requires it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// At or above this size, allocations get a lazily backed mapping.
const HUGE: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system allocator.
const PAGE: usize = 4096;

pub struct Guarded;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE && align <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from `map`
// (and returned with munmap of the same size, which `dealloc`'s layout carries); mmap memory is
// zeroed, page aligned and valid for `size` bytes.
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_huge, new_huge) = (
            is_huge(layout.size(), layout.align()),
            is_huge(new_size, layout.align()),
        );
        if !old_huge && !new_huge {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size (at least one side is huge).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
