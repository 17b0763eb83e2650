//! User space's side of the summaries (see `groundzero_common::summary`): the six prefix
//! summary maps and the two exact ones, mapped into this process and counted with atomic byte
//! operations.
//!
//! Atomics, not map updates: several processes may write the same pinned lists at once (the
//! daemon, the CLI, an application embedding this library), and a read-modify-write through
//! syscalls could lose a count, leaving a prefix in its trie that the XDP program skips.
//!
//! Every summary also has a bitmap (map layout 5), which is what the XDP program reads: a key's
//! bit is set right after its count goes up, and cleared when a removal takes the count to
//! zero. Count and bit are two words, so a clear could undo another writer's set in between
//! (its entry then in the map with a clear bit: skipped). Writers therefore hold a `flock` on
//! the pinned maps' directory: shared while counting up (adds do not disturb each other),
//! exclusive while counting down and clearing. The kernel drops a dead writer's lock, and a
//! writer dies holding it with its count and bit written in the one order that is safe.

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
pub(super) struct Shared {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; it lives until drop.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Maps the first `len` bytes of `data` (an mmapable array whose elements have no padding).
    pub(super) fn map(name: &'static str, data: &MapData, len: usize) -> Result<Self, Error> {
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

impl Shared {
    /// The mapping's first byte.
    pub(super) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The mapping's length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
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

    fn get(&self, key: u32) -> bool {
        let (word, bit) = self.word(key);
        word.load(Ordering::SeqCst) & bit != 0
    }
}

/// One more entry on a key: its count up (a count at the sticky value stays), then its bit set.
/// Under the shared lock.
fn count_up(count: &AtomicU8, bit: Option<(&AtomicU64, u64)>) {
    let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
        (c < SUMMARY_STICKY).then(|| c + 1)
    });
    if let Some((word, bit)) = bit {
        word.fetch_or(bit, Ordering::SeqCst);
    }
}

/// One entry less on a key: its count down (zero and sticky counts stay), then its bit cleared
/// if the count is zero. Under the exclusive lock: no count goes up between the test and the
/// clear.
fn count_down(count: &AtomicU8, bit: Option<(&AtomicU64, u64)>) {
    let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
        (c != 0 && c < SUMMARY_STICKY).then(|| c - 1)
    });
    if let Some((word, bit)) = bit {
        if count.load(Ordering::SeqCst) == 0 {
            #[cfg(test)]
            tests::between_test_and_clear();
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }
}

/// The writers' lock on a pin directory's maps (see the module docs), `None` for maps that are
/// not pinned (this process's own: one writer, a `&mut Shield`).
pub(super) struct WriteLock(Option<(std::fs::File, std::path::PathBuf)>);

/// Held while it lives.
pub(crate) struct Locked<'a>(Option<&'a std::fs::File>);

impl WriteLock {
    pub(super) fn open(maps_dir: Option<&std::path::Path>) -> Result<Self, Error> {
        maps_dir
            .map(|dir| {
                std::fs::File::open(dir)
                    .map(|file| (file, dir.to_path_buf()))
                    .map_err(|e| Error::Pin {
                        path: dir.to_path_buf(),
                        message: format!("opening the maps directory to lock the summaries: {e}"),
                    })
            })
            .transpose()
            .map(WriteLock)
    }

    /// Shared (`adding`) or exclusive.
    pub(super) fn lock(&self, adding: bool) -> Result<Locked<'_>, Error> {
        let Some((file, dir)) = &self.0 else {
            return Ok(Locked(None));
        };
        let op = if adding { libc::LOCK_SH } else { libc::LOCK_EX };
        loop {
            // SAFETY: flock on an fd this struct owns.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Locked(Some(file)));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Pin {
                    path: dir.clone(),
                    message: format!("locking the summaries for writing: {e}"),
                });
            }
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0 {
            // SAFETY: unlocks what `lock` locked, on the same fd.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
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

    /// Counts one more prefix on every key of `block` (a count at the sticky value stays), and
    /// sets their bits. Under the shared lock.
    fn add(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            count_up(self.cell(key), self.bits.as_ref().map(|b| b.word(key)));
        }
    }

    /// Counts one prefix less (zero and sticky counts stay), and clears the bits of the counts
    /// that reach zero. Under the exclusive lock.
    fn sub(&self, block: KeyBlock) {
        for key in block.start..block.start + block.len {
            count_down(self.cell(key), self.bits.as_ref().map(|b| b.word(key)));
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
    lock: WriteLock,
}

impl Summaries {
    /// Maps the summary arrays of `object` into this process (the exact ones only if the
    /// object has them).
    /// `maps_dir`: where the maps are pinned, if they are (other processes may write them).
    pub(crate) fn map(object: &Object, maps_dir: Option<&std::path::Path>) -> Result<Self, Error> {
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
                // Absent: an older object. Present but not an array: an error, not "no bits"
                // (this build's program would then skip every lookup).
                let bits = match object.map(bits) {
                    Ok(_) => Some((bits, array(bits)?)),
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
            lock: WriteLock::open(maps_dir)?,
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
    pub(crate) fn add(&self, list: ListKind, net: &IpNet) -> Result<(), Error> {
        self.add_all(list, std::slice::from_ref(net))
    }

    /// [`Summaries::add`] for many entries, under one lock.
    pub(crate) fn add_all(&self, list: ListKind, nets: &[IpNet]) -> Result<(), Error> {
        self.each_key(true, list, nets, Counts::add)
    }

    /// After a removal (or an insert that did not add): uncount the entry.
    pub(crate) fn sub(&self, list: ListKind, net: &IpNet) -> Result<(), Error> {
        self.sub_all(list, std::slice::from_ref(net))
    }

    /// [`Summaries::sub`] for many entries, under one lock.
    pub(crate) fn sub_all(&self, list: ListKind, nets: &[IpNet]) -> Result<(), Error> {
        self.each_key(false, list, nets, Counts::sub)
    }

    /// `step` on every summary key of every entry in `nets`, under the shared lock (`adding`)
    /// or the exclusive one.
    fn each_key(
        &self,
        adding: bool,
        list: ListKind,
        nets: &[IpNet],
        step: fn(&Counts, KeyBlock),
    ) -> Result<(), Error> {
        let _locked = self.lock.lock(adding)?;
        for net in nets {
            for (counts, block) in self.of(list, net) {
                step(counts, block);
            }
        }
        Ok(())
    }

    /// The summaries' counts at `addr`'s keys (one for IPv4, two for IPv6 prefixes, one for an
    /// exact entry): the XDP program looks in the map only when none is 0 (it reads their bits).
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
    use std::sync::atomic::AtomicBool;

    /// Widens the window between a removal's test of the count and its clear, which is where
    /// an adder's set could be undone without the lock: long enough for the other writer to
    /// count and insert, and for the reader to look.
    pub(super) fn between_test_and_clear() {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }

    /// Two writers with locks of their own on one directory (as two processes sharing pins
    /// have), each adding and removing an entry on the same key, and a reader that checks what
    /// the XDP program relies on: while an entry is in the map, its key's bit is set. The reader
    /// only trusts a reading if the writer's entry was in the map before and after it.
    #[test]
    fn an_entry_in_the_map_always_has_its_bit_set() {
        let dir = std::env::temp_dir().join(format!("gz-summary-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = AtomicU8::new(0);
        let word = AtomicU64::new(0);
        let bit = 1u64 << 9;
        // Per writer: whether its entry is in the map, and how many times it went in.
        let present = [AtomicBool::new(false), AtomicBool::new(false)];
        let generation = [AtomicU64::new(0), AtomicU64::new(0)];
        let done = AtomicU64::new(0);
        let mut checked = 0u64;
        std::thread::scope(|s| {
            for w in 0..2 {
                let (count, word, present, generation, done, dir) =
                    (&count, &word, &present[w], &generation[w], &done, &dir);
                s.spawn(move || {
                    let lock = WriteLock::open(Some(dir)).unwrap();
                    for _ in 0..5_000 {
                        {
                            let _l = lock.lock(true).unwrap();
                            count_up(count, Some((word, bit)));
                        }
                        generation.fetch_add(1, Ordering::SeqCst);
                        present.store(true, Ordering::SeqCst); // inserted
                        std::thread::sleep(std::time::Duration::from_micros(20));
                        present.store(false, Ordering::SeqCst); // removed
                        {
                            let _l = lock.lock(false).unwrap();
                            count_down(count, Some((word, bit)));
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            while done.load(Ordering::SeqCst) < 2 {
                for w in 0..2 {
                    let g = generation[w].load(Ordering::SeqCst);
                    if !present[w].load(Ordering::SeqCst) {
                        continue;
                    }
                    let set = word.load(Ordering::SeqCst) & bit != 0;
                    if present[w].load(Ordering::SeqCst)
                        && generation[w].load(Ordering::SeqCst) == g
                    {
                        assert!(set, "writer {w}'s entry was in the map with its bit clear");
                        checked += 1;
                    }
                }
            }
        });
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(
            word.load(Ordering::SeqCst),
            0,
            "the last removal left the bit set"
        );
        assert!(checked > 0, "the reader never saw an entry in the map");
    }
}
