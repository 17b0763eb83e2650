//! BPF_MAP_UPDATE_BATCH and BPF_MAP_DELETE_BATCH for hash maps: one syscall for thousands of
//! entries instead of one each. aya 0.14 does not wrap these commands, so we issue the `bpf()`
//! syscall ourselves here (and for two link commands in `pins`); the attribute layout is
//! `union bpf_attr`'s `batch` member from include/uapi/linux/bpf.h (stable UAPI since 5.6).

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of a hash map, read in batches (BPF_MAP_LOOKUP_BATCH): a few syscalls for
/// a million entries instead of two each. Also how callers that must not overwrite existing
/// entries find them, since the kernel's batch update takes no per-element flag but BPF_F_LOCK.
pub(crate) fn entries<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
) -> std::io::Result<Vec<(K, V)>> {
    const CHUNK: usize = 1 << 14;
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // The hash map's batch token is a bucket index (u32); 8 aligned bytes hold it.
    let mut token = [0u64; 1];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the key and value buffers hold CHUNK elements of the map's key/value types;
        // the kernel writes at most `count` of each, the token and `count`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(std::io::Error::last_os_error);
        match error.as_ref().and_then(|e| e.raw_os_error()) {
            // ENOENT: the walk is over; `count` still says how many came with this last call.
            None | Some(libc::ENOENT) => {
                let n = attr.count as usize;
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
            }
            _ => return Err(error.expect("ret < 0")),
        }
        if error.is_some() {
            return Ok(out);
        }
        first = false;
    }
}

/// Runs one batch command on `count` keys (and values). Returns how many elements the kernel
/// processed and, if it stopped early, why (the element at that index is the one that failed).
fn batch(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
    elem_flags: u64,
) -> (usize, std::io::Result<()>) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: count as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` whose key/value pointers cover `count` elements
    // of the map's key/value sizes (the callers build them from typed slices); the kernel only
    // writes back `attr.count`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    let result = if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    };
    (attr.count as usize, result)
}

/// Inserts `keys[i] → values[i]` (the kernel allows no per-element flag but BPF_F_LOCK here,
/// so existing keys are overwritten: filter them out first).
pub(crate) fn update<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    elem_flags: u64,
) -> (usize, std::io::Result<()>) {
    debug_assert_eq!(keys.len(), values.len());
    // SAFETY: K and V are plain-old-data map keys/values; viewing them as bytes is sound.
    let (k, v) = unsafe {
        (
            std::slice::from_raw_parts(keys.as_ptr() as *const u8, std::mem::size_of_val(keys)),
            std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)),
        )
    };
    batch(BPF_MAP_UPDATE_BATCH, fd, k, Some(v), keys.len(), elem_flags)
}

/// Deletes `keys`.
pub(crate) fn delete<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> (usize, std::io::Result<()>) {
    // SAFETY: as above.
    let k = unsafe {
        std::slice::from_raw_parts(keys.as_ptr() as *const u8, std::mem::size_of_val(keys))
    };
    batch(BPF_MAP_DELETE_BATCH, fd, k, None, keys.len(), 0)
}
