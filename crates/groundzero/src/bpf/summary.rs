//! User space's side of the summaries (see `groundzero_common::summary`): the six prefix
//! summary maps and the two exact ones, mapped into this process and counted with atomic byte
//! operations.
//!
//! Atomics, not map updates: several processes may write the same pinned lists at once (the
//! daemon, the CLI, an application embedding this library), and a read-modify-write through
//! syscalls could lose a count, leaving a prefix in its trie that the XDP program skips.
//!
//! Every summary also has a bitmap (map layout 5), which is what the XDP program reads: a key's bit is set after its count goes up and, after its count goes down, set or
//! cleared to match the count until the count reads the same before and after (see
//! [`Bits::publish`]), so that a writer clearing a bit never hides another's new entry.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use aya::maps::{Map, MapData, MapError};
use groundzero_common::summary::{
    self as sum, KeyBlock, EXACT_KEY_BITS, SUMMARY_KEY_BITS, SUMMARY_STICKY,
};
use ipnet::IpNet;

use groundzero_common::lists::ListKind;

use super::object::Object;
use crate::error::Error;

/// An mmapable array map, mapped shared with the kernel.
struct Shared {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; it lives until drop.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Maps the first `len` bytes of `data` (an mmapable array whose elements have no padding).
    fn map(name: &'static str, data: &MapData, len: usize) -> Result<Self, Error> {
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of an mmapable array map of at least `len` bytes;
        // unmapped in Drop.
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
        Ok(Shared {
            base: NonNull::new(ptr.cast()).expect("mmap does not return null on success"),
            len,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A summary's bitmap: bit k set while count k is not zero.
struct Bits(Shared);

impl Bits {
    fn word(&self, key: u32) -> (&AtomicU64, u64) {
        let (word, bit) = sum::key_bit(key);
        let i = word as usize;
        assert!(i < self.0.len / 8, "summary key {key} out of range");
        // SAFETY: in bounds (checked above) of a live mapping of u64 words, which mmap aligns
        // to a page; AtomicU64 has u64's layout.
        (
            unsafe { &*self.0.base.as_ptr().cast::<AtomicU64>().add(i) },
            bit,
        )
    }

    /// Makes `key`'s bit say whether `count` is zero, until the count reads the same after
    /// the bit was written as before. A writer that clears the bit and then finds the count
    /// changed (another writer counted an entry in between) writes it again, so the last bit
    /// written matches a count no writer changed since: a counted key never keeps a clear bit.
    fn publish(&self, key: u32, count: &AtomicU8) {
        publish(self.word(key), count);
    }

    fn get(&self, key: u32) -> bool {
        let (word, bit) = self.word(key);
        word.load(Ordering::SeqCst) & bit != 0
    }
}

/// [`Bits::publish`] on one word: the bit of `word` follows `count`.
fn publish((word, bit): (&AtomicU64, u64), count: &AtomicU8) {
    loop {
        let c = count.load(Ordering::SeqCst);
        if c == 0 {
            word.fetch_and(!bit, Ordering::SeqCst);
        } else {
            word.fetch_or(bit, Ordering::SeqCst);
        }
        if count.load(Ordering::SeqCst) == c {
            return;
        }
    }
}

/// The counts of one summary map, mapped shared with the kernel, and its bitmap.
struct Counts {
    counts: Shared,
    bits: Option<Bits>,
}

impl Counts {
    /// Maps a summary of `2^key_bits` counts (slots of 64 one-byte counts, no per-element
    /// padding: one count per key), and its bitmap if it has one.
    fn map(
        name: &'static str,
        data: &MapData,
        key_bits: u32,
        bits: Option<(&'static str, &MapData)>,
    ) -> Result<Self, Error> {
        let words = (1usize << key_bits) / 64;
        Ok(Counts {
            counts: Shared::map(name, data, 1usize << key_bits)?,
            bits: bits
                .map(|(name, data)| Shared::map(name, data, words * 8))
                .transpose()?
                .map(Bits),
        })
    }

    fn cell(&self, key: u32) -> &AtomicU8 {
        let i = key as usize;
        assert!(i < self.counts.len, "summary key {key} out of range");
        // SAFETY: in bounds (checked above) of a live mapping; AtomicU8 has u8's layout.
        unsafe { &*self.counts.base.as_ptr().cast::<AtomicU8>().add(i) }
    }

    /// Counts one more prefix on every key of `block`; a count at the sticky value stays.
    fn add(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            let cell = self.cell(key);
            let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < SUMMARY_STICKY).then(|| c + 1)
            });
            if let Some(bits) = &self.bits {
                bits.publish(key, cell);
            }
        }
    }

    /// Counts one prefix less; zero and sticky counts stay.
    fn sub(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            let cell = self.cell(key);
            let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c != 0 && c < SUMMARY_STICKY).then(|| c - 1)
            });
            if let Some(bits) = &self.bits {
                bits.publish(key, cell);
            }
        }
    }

    fn get(&self, key: u32) -> u8 {
        self.cell(key).load(Ordering::SeqCst)
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
        let array = |name: &'static str| -> Result<&MapData, Error> {
            match object.map(name)? {
                Map::Array(data) => Ok(data),
                _ => Err(Error::NoMap { map: name }),
            }
        };
        // Objects of layout 4 and older (the benchmark's baseline builds) have the counts and
        // no bits: their program reads the counts.
        let with_bits =
            |counts: &'static str, bits: &'static str, key_bits: u32| -> Result<Counts, Error> {
                let bits = match array(bits) {
                    Ok(data) => Some((bits, data)),
                    Err(Error::NoMap { .. }) => None,
                    Err(e) => return Err(e),
                };
                Counts::map(counts, array(counts)?, key_bits, bits)
            };
        let one = |counts, bits| with_bits(counts, bits, SUMMARY_KEY_BITS);
        let exact = match object.map(sum::BLOCK_SUM_V4) {
            Ok(_) => Some([
                with_bits(sum::BLOCK_SUM_V4, sum::BLOCK_BITS_V4, EXACT_KEY_BITS)?,
                with_bits(sum::BLOCK_SUM_V6, sum::BLOCK_BITS_V6, EXACT_KEY_BITS)?,
            ]),
            Err(Error::NoMap { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Summaries {
            allow_v4: one(sum::ALLOW_SUM_V4, sum::ALLOW_BITS_V4)?,
            allow_v6: [
                one(sum::ALLOW_SUM_V6, sum::ALLOW_BITS_V6)?,
                one(sum::ALLOW_SUM_V6_LOW, sum::ALLOW_BITS_V6_LOW)?,
            ],
            cidr_v4: one(sum::BLOCK_NET_SUM_V4, sum::BLOCK_NET_BITS_V4)?,
            cidr_v6: [
                one(sum::BLOCK_NET_SUM_V6, sum::BLOCK_NET_BITS_V6)?,
                one(sum::BLOCK_NET_SUM_V6_LOW, sum::BLOCK_NET_BITS_V6_LOW)?,
            ],
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

    /// The summaries' bits at `addr`'s keys, as [`Summaries::counts_at`] gives the counts: what
    /// the XDP program reads (`None` for an object without the bitmaps).
    pub(crate) fn bits_at(&self, list: ListKind, addr: std::net::IpAddr) -> Option<Vec<bool>> {
        self.of(list, &IpNet::from(addr))
            .into_iter()
            .map(|(counts, block)| counts.bits.as_ref().map(|b| b.get(block.start)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers adding and removing entries on one key, as two processes sharing pins do:
    /// whenever both have stopped, the bit says whether the count is zero. (A bit cleared after
    /// another writer's count went up would let the XDP program skip a listed address.)
    #[test]
    fn the_bit_follows_the_count_under_concurrent_writers() {
        let count = AtomicU8::new(0);
        let word = AtomicU64::new(0);
        let bit = 1u64 << 5;
        for round in 0..200usize {
            // Both writers add an entry and remove it again, 200 times each, at once: the
            // count goes back to where it was, and so must the bit.
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let (count, word) = (&count, &word);
                    s.spawn(move || {
                        for _ in 0..200 {
                            count.fetch_add(1, Ordering::SeqCst);
                            publish((word, bit), count);
                            count.fetch_sub(1, Ordering::SeqCst);
                            publish((word, bit), count);
                        }
                    });
                }
            });
            let c = count.load(Ordering::SeqCst);
            assert_eq!(c as usize, round, "round {round}");
            assert_eq!(
                word.load(Ordering::SeqCst) & bit != 0,
                c != 0,
                "round {round}"
            );
            // One more entry stays for the next round.
            count.fetch_add(1, Ordering::SeqCst);
            publish((&word, bit), &count);
        }
        // And back to zero: the bit clears.
        count.store(1, Ordering::SeqCst);
        count.fetch_sub(1, Ordering::SeqCst);
        publish((&word, bit), &count);
        assert_eq!(word.load(Ordering::SeqCst), 0);
    }
}
