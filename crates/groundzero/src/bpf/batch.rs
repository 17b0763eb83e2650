//! Typed batch operations on hash maps (BPF_MAP_LOOKUP/UPDATE/DELETE_BATCH): one syscall for
//! thousands of entries instead of one each. The raw commands are in `sys`.

use std::os::fd::BorrowedFd;

use super::sys;

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
    let mut token = None;
    loop {
        let (n, over) = sys::map_lookup_batch(fd, &mut token, &mut keys, &mut values)?;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if over {
            return Ok(out);
        }
    }
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
    sys::map_update_batch(fd, k, v, keys.len(), elem_flags)
}

/// Deletes `keys`.
pub(crate) fn delete<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> (usize, std::io::Result<()>) {
    // SAFETY: as above.
    let k = unsafe {
        std::slice::from_raw_parts(keys.as_ptr() as *const u8, std::mem::size_of_val(keys))
    };
    sys::map_delete_batch(fd, k, keys.len())
}
