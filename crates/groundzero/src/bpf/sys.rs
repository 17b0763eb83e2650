//! The `bpf()` commands aya 0.14 does not wrap (batched map updates, link detach, opening a pin
//! as a raw fd) and the ones the benchmarks need on raw fds (a two-instruction program, a bare
//! map, test runs with live frames). Everything here goes through [`bpf`], the one place the
//! syscall is issued; the attribute layouts are `union bpf_attr`'s members from
//! include/uapi/linux/bpf.h (stable UAPI: the kernel zero-extends a shorter attribute).

use std::{
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `enum bpf_cmd` values used here.
pub mod cmd {
    pub const MAP_CREATE: libc::c_long = 0;
    pub const PROG_LOAD: libc::c_long = 5;
    pub const OBJ_GET: libc::c_long = 7;
    pub const PROG_TEST_RUN: libc::c_long = 10;
    pub const MAP_LOOKUP_BATCH: libc::c_long = 24;
    pub const MAP_UPDATE_BATCH: libc::c_long = 26;
    pub const MAP_DELETE_BATCH: libc::c_long = 27;
    pub const LINK_DETACH: libc::c_long = 34;
}

/// Issues `bpf(cmd, attr, sizeof attr)`; the command's return value (a new fd for the commands
/// that make one).
///
/// # Safety
/// `A` must be `#[repr(C)]` with the layout of `cmd`'s member of `union bpf_attr` (or a prefix
/// of it), and every pointer in `attr` must be valid for what the kernel reads and writes
/// during `cmd`.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for the attribute; the kernel reads at most size_of::<A>().
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Takes ownership of the fd a command returned.
///
/// # Safety
/// `ret` must be a new fd that nothing else owns (what BPF_PROG_LOAD, BPF_MAP_CREATE and
/// BPF_OBJ_GET return on success).
pub unsafe fn owned_fd(ret: libc::c_long) -> OwnedFd {
    // SAFETY: as the caller vouches.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// `union bpf_attr`'s `batch` member (BPF_MAP_*_BATCH, Linux 5.6+).
#[repr(C)]
#[derive(Default)]
pub struct BatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// `union bpf_attr`'s BPF_MAP_CREATE member, up to `map_flags`.
#[repr(C)]
#[derive(Default)]
pub struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

/// `union bpf_attr`'s BPF_PROG_LOAD member, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    /// `BPF_XDP` for an XDP program as aya loads it: a program array takes only programs of
    /// the same attach type as the program that tail-calls through it.
    pub expected_attach_type: u32,
}

/// `enum bpf_attach_type`'s BPF_XDP.
pub const BPF_XDP: u32 = 37;

/// `union bpf_attr`'s `test` member (BPF_PROG_TEST_RUN), up to `batch_size`.
#[repr(C)]
#[derive(Default)]
pub struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

/// BPF_MAP_UPDATE_BATCH of `count` elements laid out back to back in `keys` and `values`.
/// Returns how many the kernel processed and, if it stopped early, why: the element at that
/// index is the one that failed. An error before the kernel's loop (a bad fd or attribute)
/// leaves `count` as passed in: callers trust the count only when it is below it.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
    elem_flags: u64,
) -> (usize, io::Result<()>) {
    reading_batch(
        cmd::MAP_UPDATE_BATCH,
        map,
        keys,
        Some(values),
        count,
        elem_flags,
    )
}

/// BPF_MAP_DELETE_BATCH of `count` keys laid out back to back in `keys`; returns as
/// [`map_update_batch`] does.
pub fn map_delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: usize) -> (usize, io::Result<()>) {
    reading_batch(cmd::MAP_DELETE_BATCH, map, keys, None, count, 0)
}

/// The batch commands that only read their buffers.
fn reading_batch(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
    elem_flags: u64,
) -> (usize, io::Result<()>) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags,
        ..Default::default()
    };
    // SAFETY: a `batch` attribute for UPDATE or DELETE, which only read `keys` and `values` (a
    // short buffer makes the kernel fail with EFAULT or read bytes of ours, never write to
    // them) and write back `attr.count`.
    let result = unsafe { bpf(cmd, &mut attr) }.map(drop);
    (attr.count as usize, result)
}

/// One BPF_MAP_LOOKUP_BATCH call: up to `keys.len()` elements, from where `token` says
/// (`None`: the start), which is then moved on. Returns how many came and whether the walk is
/// over. `values` holds one value per key, or for a per-CPU map one per key and possible CPU
/// (the kernel lays them out key by key, each value padded to 8 bytes: V must be a multiple).
pub fn map_lookup_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    token: &mut Option<u64>,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<(usize, bool)> {
    assert!(!keys.is_empty() && values.len().is_multiple_of(keys.len()));
    // A hash map's token is a u32 bucket index; 8 aligned bytes hold any map's.
    let from = [token.unwrap_or(0)];
    let mut next = [0u64];
    let mut attr = BatchAttr {
        in_batch: token.map_or(0, |_| from.as_ptr() as u64),
        out_batch: next.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: the key and value buffers hold `count` elements of K and V, which the caller
    // chose to be the map's key and value types; the kernel writes at most `count` of each,
    // the next token and `count`.
    let result = unsafe { bpf(cmd::MAP_LOOKUP_BATCH, &mut attr) };
    *token = Some(next[0]);
    match result {
        Ok(_) => Ok((attr.count as usize, false)),
        // ENOENT: the walk is over; `count` still says how many came with this last call.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count as usize, true)),
        Err(e) => Err(e),
    }
}

/// Opens the object pinned at `path` (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    /// `obj_pin` member, up to `file_flags`.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut attr = ObjGetAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: the path is a NUL-terminated string that outlives the call; on success the
    // kernel returns a new fd.
    unsafe { bpf(cmd::OBJ_GET, &mut attr).map(|fd| owned_fd(fd)) }
}

/// Detaches a link from its hook now (BPF_LINK_DETACH, Linux 5.9+). The link object lives on,
/// defunct, until its last fd and pin are gone.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    /// `link_detach` member.
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    // SAFETY: no pointers; the kernel only reads the fd.
    unsafe { bpf(cmd::LINK_DETACH, &mut attr) }.map(drop)
}
