//! The global allocator of Sluice's binaries: the system allocator, except
//! that allocations of 1 GiB or more only reserve address space.
//!
//! The control-plane codec (the `kafka-protocol` crate) sizes every array
//! it decodes from the array's length prefix before it reads an element. A
//! request of a few bytes that claims two billion topics thus asks for a
//! hundred gigabytes. The system allocator refuses that, and Rust aborts
//! the process on a refused allocation: one malformed frame would stop the
//! broker for every client. Reserved instead (an anonymous mapping with
//! `MAP_NORESERVE`, which takes no memory until its pages are written),
//! the allocation succeeds, decoding fails at the first element the frame
//! does not hold, and the mapping is returned unused. No real allocation
//! here comes near 1 GiB: frames are capped by `socket.request.max.bytes`.
//!
//! Under strict overcommit (`vm.overcommit_memory=2`) the kernel ignores
//! `MAP_NORESERVE`, and such a frame still aborts the process.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size on are reserved address space.
const RESERVE_FROM: usize = 1 << 30;
/// Mappings are page-aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

pub struct Allocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVE_FROM && layout.align() <= PAGE
}

// SAFETY: every block comes from either the system allocator or its own
// mapping, and `reserved` on the block's layout (the same at allocation and
// release, as GlobalAlloc requires) tells which one frees it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            reserve(layout.size())
        } else {
            // SAFETY: the caller's layout contract, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // Anonymous mappings read as zeros.
            reserve(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if reserved(&layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `reserve`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from the system allocator with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's contract makes this layout valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (reserved(&layout), reserved(&new_layout)) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => return unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // Moved by the kernel: pages never written stay unbacked.
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes made
                // by `reserve`; on failure it stays as it was.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                return if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                };
            }
            _ => {}
        }
        // SAFETY: a fresh block of `new_layout`, the old one copied in and
        // released with the layout it was made with.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// `size` bytes of address space, or null when the kernel refuses.
fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no memory is passed in.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_gigabytes_are_reserved_written_to_in_part_and_released() {
        let layout = Layout::from_size_align(100 << 30, 8).unwrap();
        // SAFETY: the block is used within its size and freed with its layout.
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((100 << 30) - 1) = 9;
            assert_eq!((*p, *p.add(1)), (7, 0));
            let q = Allocator.realloc(p, layout, 4096);
            assert_eq!((*q, *q.add(1)), (7, 0));
            Allocator.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
    }

    #[test]
    fn reserved_blocks_grow_in_place_of_a_copy() {
        let layout = Layout::from_size_align(RESERVE_FROM, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = Allocator.alloc(layout);
            *p.add(12) = 3;
            let q = Allocator.realloc(p, layout, 64 << 30);
            assert!(!q.is_null());
            assert_eq!((*q.add(12), *q.add((64 << 30) - 1)), (3, 0));
            Allocator.dealloc(q, Layout::from_size_align(64 << 30, 8).unwrap());
        }
    }

    #[test]
    fn ordinary_blocks_grow_into_reserved_ones_with_their_contents() {
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = Allocator.alloc(small);
            std::ptr::write_bytes(p, 5, 64);
            let q = Allocator.realloc(p, small, RESERVE_FROM);
            assert!((0..64).all(|i| *q.add(i) == 5));
            Allocator.dealloc(q, Layout::from_size_align(RESERVE_FROM, 8).unwrap());
        }
    }
}
