//! Bounds-checked reads of the packet in front of an XDP program.

use groundzero_common::PacketBytes;

/// Bounds-checked packet reads. The `start + offset + N > end` comparison on packet pointers is
/// the shape the verifier understands.
pub struct XdpBytes {
    pub start: usize,
    pub end: usize,
}

impl PacketBytes for XdpBytes {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let ptr = self.start + offset;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: the check above keeps [ptr, ptr + N) inside the packet.
        Some(unsafe { core::ptr::read_unaligned(ptr as *const [u8; N]) })
    }

    #[inline(always)]
    fn head<const N: usize>(&self) -> Option<&[u8; N]> {
        if self.start + N > self.end {
            return None;
        }
        // SAFETY: the check above keeps [start, start + N) inside the packet, which outlives
        // `self`; a byte array has no alignment requirement.
        Some(unsafe { &*(self.start as *const [u8; N]) })
    }
}
