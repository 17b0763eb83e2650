//! User space's side of the summaries (see `groundzero_common::summary`): the six prefix
//! summary maps and the two exact ones, mapped into this process and counted with atomic byte
//! operations.
//!
//! Atomics, not map updates: several processes may write the same pinned lists at once (the
//! daemon, the CLI, an application embedding this library), and a read-modify-write through
//! syscalls could lose a count, leaving a prefix in its trie that the XDP program skips.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering},
};

use aya::maps::{Map, MapData, MapError};
use groundzero_common::summary::{
    self as sum, KeyBlock, EXACT_KEY_BITS, SUMMARY_KEY_BITS, SUMMARY_STICKY,
};
use ipnet::IpNet;

use groundzero_common::lists::ListKind;

use super::object::Object;
use crate::error::Error;

/// The counts of one summary map, mapped shared with the kernel.
struct Counts {
    base: NonNull<AtomicU8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; it lives until drop.
unsafe impl Send for Counts {}
// SAFETY: as above.
unsafe impl Sync for Counts {}

impl Counts {
    /// Maps a summary of `2^key_bits` counts.
    fn map(name: &'static str, data: &MapData, key_bits: u32) -> Result<Self, Error> {
        // Slots of 64 one-byte counts, no per-element padding: one count per key.
        let len = 1usize << key_bits;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of an mmapable array map of exactly `len` bytes (its
        // slots are 64 bytes, so there is no per-element padding); unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::MapRead {
                map: name,
                source: MapError::SyscallError(aya::sys::SyscallError {
                    call: "mmap",
                    io_error: std::io::Error::last_os_error(),
                }),
            });
        }
        Ok(Counts {
            base: NonNull::new(ptr.cast()).expect("mmap does not return null on success"),
            len,
        })
    }

    fn cell(&self, key: u32) -> &AtomicU8 {
        let i = key as usize;
        assert!(i < self.len, "summary key {key} out of range");
        // SAFETY: in bounds (checked above) of a live mapping; AtomicU8 has u8's layout.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    /// Counts one more prefix on every key of `block`; a count at the sticky value stays.
    fn add(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            let _ = self
                .cell(key)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    (c < SUMMARY_STICKY).then(|| c + 1)
                });
        }
    }

    /// Counts one prefix less; zero and sticky counts stay.
    fn sub(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            let _ = self
                .cell(key)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    (c != 0 && c < SUMMARY_STICKY).then(|| c - 1)
                });
        }
    }

    fn get(&self, key: u32) -> u8 {
        self.cell(key).load(Ordering::SeqCst)
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The summaries of the allowlist and blocked-prefix tries and of the exact hashes, both
/// families.
pub(crate) struct Summaries {
    allow_v4: Counts,
    allow_v6: [Counts; 2],
    cidr_v4: Counts,
    cidr_v6: [Counts; 2],
    /// `None` for an object without them (an older build's, which the benchmark loads beside
    /// this one's): its program looks every address up.
    exact: Option<[Counts; 2]>,
}

impl Summaries {
    /// Maps the summary arrays of `object` into this process (the exact ones only if the
    /// object has them).
    pub(crate) fn map(object: &Object) -> Result<Self, Error> {
        let sized = |name: &'static str, bits: u32| -> Result<Counts, Error> {
            match object.map(name)? {
                Map::Array(data) => Counts::map(name, data, bits),
                _ => Err(Error::NoMap { map: name }),
            }
        };
        let one = |name| sized(name, SUMMARY_KEY_BITS);
        let exact = match object.map(sum::BLOCK_SUM_V4) {
            Ok(_) => Some([
                sized(sum::BLOCK_SUM_V4, EXACT_KEY_BITS)?,
                sized(sum::BLOCK_SUM_V6, EXACT_KEY_BITS)?,
            ]),
            Err(Error::NoMap { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Summaries {
            allow_v4: one(sum::ALLOW_SUM_V4)?,
            allow_v6: [one(sum::ALLOW_SUM_V6)?, one(sum::ALLOW_SUM_V6_LOW)?],
            cidr_v4: one(sum::BLOCK_NET_SUM_V4)?,
            cidr_v6: [one(sum::BLOCK_NET_SUM_V6)?, one(sum::BLOCK_NET_SUM_V6_LOW)?],
            exact,
        })
    }

    /// The counts and key blocks of an entry: one summary for an IPv4 prefix, two for an IPv6
    /// one, one key of the family's exact summary for an exact entry.
    fn of(&self, list: ListKind, net: &IpNet) -> Vec<(&Counts, KeyBlock)> {
        let one = |start| KeyBlock { start, len: 1 };
        match (list, net) {
            (ListKind::BlockExact, net) => match (&self.exact, net) {
                (None, _) => Vec::new(),
                (Some([v4, _]), IpNet::V4(n)) => {
                    vec![(v4, one(sum::exact_key_v4(&n.addr().octets())))]
                }
                (Some([_, v6]), IpNet::V6(n)) => {
                    vec![(v6, one(sum::exact_key_v6(&n.addr().octets())))]
                }
            },
            (list, IpNet::V4(n)) => {
                let counts = match list {
                    ListKind::Allow => &self.allow_v4,
                    _ => &self.cidr_v4,
                };
                vec![(counts, sum::keys_v4(&n.addr().octets(), n.prefix_len()))]
            }
            (list, IpNet::V6(n)) => {
                let [first, low] = match list {
                    ListKind::Allow => &self.allow_v6,
                    _ => &self.cidr_v6,
                };
                let (addr, len) = (n.addr().octets(), n.prefix_len());
                vec![
                    (first, sum::keys_v6(&addr, len)),
                    (low, sum::keys_v6_low(&addr, len)),
                ]
            }
        }
    }

    /// Before an insert: count the entry, so the XDP program never skips it.
    pub(crate) fn add(&self, list: ListKind, net: &IpNet) {
        for (counts, block) in self.of(list, net) {
            counts.add(block);
        }
    }

    /// After a removal (or an insert that did not add): uncount the entry.
    pub(crate) fn sub(&self, list: ListKind, net: &IpNet) {
        for (counts, block) in self.of(list, net) {
            counts.sub(block);
        }
    }

    /// The summaries' counts at `addr`'s keys (one for IPv4, two for IPv6 prefixes, one for an
    /// exact entry): the XDP program looks in the map only when none is 0.
    pub(crate) fn counts_at(&self, list: ListKind, addr: std::net::IpAddr) -> Vec<u8> {
        self.of(list, &IpNet::from(addr))
            .into_iter()
            .map(|(counts, block)| counts.get(block.start))
            .collect()
    }
}
