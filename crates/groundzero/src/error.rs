//! The library's error type. Every variant says what failed and, where there is one, what to do.

use std::fmt;

use ipnet::IpNet;

use crate::entry::EntryError;

pub use groundzero_common::lists::ListKind;

/// What was being done to a list entry when its map failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOp {
    Add,
    Remove,
}

impl EntryOp {
    /// `to` or `from`, as the operation reads with a list.
    pub const fn preposition(self) -> &'static str {
        match self {
            EntryOp::Add => "to",
            EntryOp::Remove => "from",
        }
    }
}

impl fmt::Display for EntryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryOp::Add => "adding",
            EntryOp::Remove => "removing",
        })
    }
}

/// The library's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "loading the XDP program into the kernel failed; groundzero needs root \
         (CAP_BPF, CAP_NET_ADMIN) and a kernel with BTF"
    )]
    Load(#[source] aya::EbpfError),

    #[error("preparing the XDP program failed")]
    Program(#[source] aya::programs::ProgramError),

    #[error("journey tracing: {0}")]
    Journey(String),

    #[error("interface `{interface}` does not exist here (list them with `ip link`)")]
    NoSuchInterface { interface: String },

    #[error("attaching XDP to `{interface}` in {mode} mode failed")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("detaching XDP from `{interface}` failed")]
    Detach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("reading the kernel's information about program `{program}` failed")]
    ProgramInfo {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("turning on the kernel's BPF run-time statistics (BPF_ENABLE_STATS) failed")]
    RunStats(#[source] aya::sys::SyscallError),

    #[error("`{interface}` is already attached")]
    AlreadyAttached { interface: String },

    #[error("`{interface}` is not attached")]
    NotAttached { interface: String },

    #[error(
        "the {list} is full ({capacity} entries): {entry} was not added; \
         remove entries or load with a larger capacity"
    )]
    MapFull {
        list: ListKind,
        capacity: u32,
        entry: IpNet,
    },

    #[error(
        "{op} {entry} {} the {list} (map `{}`) failed",
        op.preposition(),
        list.map_name(groundzero_common::lists::Family::of(entry))
    )]
    MapUpdate {
        list: ListKind,
        op: EntryOp,
        entry: IpNet,
        #[source]
        source: aya::maps::MapError,
    },

    #[error(
        "the rate limit's IPv{family} bucket prefix length must be 1 to {max}, not {prefix_len}"
    )]
    RatePrefix { family: u8, prefix_len: u8, max: u8 },

    #[error(
        "updating the rate limit's exempt list for {entry} failed (it holds {capacity} \
         prefixes per address family)"
    )]
    RateExemptUpdate {
        entry: IpNet,
        capacity: u32,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("removing {entry} from the rate limit's exempt list failed")]
    RateExemptRemove {
        entry: IpNet,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("reading the `{map}` map failed")]
    MapRead {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("writing the `{map}` map failed")]
    MapWrite {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("deleting from the `{map}` map failed")]
    MapDelete {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error(
        "the eBPF object has no `{map}` map, or it was taken already (a ring buffer has one \
         reader); is the object from another groundzero version?"
    )]
    NoMap { map: &'static str },

    #[error("the eBPF object has no program `{program}`; is it from another groundzero version?")]
    NoProgram { program: &'static str },

    #[error("pinning at {path}: {message}")]
    Pin {
        path: std::path::PathBuf,
        message: String,
    },

    #[error(
        "the pins under {dir} have map layout {found}, newer than layout {supported}, the \
         newest this groundzero knows; refusing to adopt them. Install the groundzero that made \
         them (or a newer one), or remove them with `groundzero cleanup` (this detaches XDP and \
         drops the kernel's lists; the daemon replays its journal into fresh maps)"
    )]
    NewerLayout {
        dir: std::path::PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "the pins under {dir} need {what}, and process {pid} (a groundzero daemon?) holds them: \
         only the process that holds a pin directory changes it; try again once it has started \
         (nothing was changed)"
    )]
    PinsBusy {
        dir: std::path::PathBuf,
        pid: u32,
        what: &'static str,
    },

    #[error("migrating the pins under {dir} from map layout {from} to {to}: {message}")]
    Migrate {
        dir: std::path::PathBuf,
        from: u32,
        to: u32,
        message: String,
    },

    #[error(transparent)]
    Entry(#[from] EntryError),

    #[error("BPF_PROG_TEST_RUN failed")]
    TestRun(#[source] aya::programs::ProgramError),

    #[error("a capture is already running (one at a time); stop it or wait for it to end")]
    CaptureRunning,

    #[error("opening the capture perf buffer of CPU {cpu}")]
    CaptureBuffer {
        cpu: u32,
        #[source]
        source: aya::maps::perf::PerfBufferError,
    },

    #[error("capture: {0}")]
    Capture(String),
}

/// `e` and every `source()` under it, joined with ": ". aya puts the errno of many failures in
/// `source()`, and a message without it is useless to the person reading it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The errno of a failed map operation, if it has one.
pub(crate) fn errno(e: &aya::maps::MapError) -> Option<i32> {
    use aya::maps::MapError;
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        MapError::IoError(io) => io.raw_os_error(),
        _ => None,
    }
}

/// The key was not there (aya reports that in several ways, depending on the call).
pub(crate) fn not_found(e: &aya::maps::MapError) -> bool {
    use aya::maps::MapError;
    matches!(e, MapError::KeyNotFound | MapError::ElementNotFound) || errno(e) == Some(libc::ENOENT)
}
