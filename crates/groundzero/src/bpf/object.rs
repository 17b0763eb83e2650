//! The eBPF object (built by build.rs from crates/groundzero-ebpf and embedded in the binary):
//! loading it, and finding its programs and maps by name.
//!
//! Maps with a typed handle (the lists, the config, the counters, ...) are taken out of the
//! object once the XDP program is loaded; what stays here are the programs and the ring
//! buffers, which a reader takes when it wants them.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Map, MapData},
    programs::{Program, ProgramError, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use groundzero_common::{
    lists::{Family, ListKind},
    maps as names, Action,
};

use crate::error::Error;

/// `include_bytes_aligned!`: aya parses the ELF in place and needs it 8-byte aligned.
static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/groundzero.bpf.o"));

/// Map capacities, fixed when the program is loaded, and where to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShieldOptions {
    /// Blocked single addresses, per address family.
    pub exact_capacity: u32,
    /// Blocked prefixes, per address family.
    pub cidr_capacity: u32,
    /// Allowed prefixes and addresses, per address family.
    pub allow_capacity: u32,
    /// Pin maps and XDP links under this bpffs directory (e.g. `/sys/fs/bpf/groundzero`), so
    /// filtering and lists outlive this process, and adopt whatever is already pinned there.
    /// `None`: everything lives and dies with the [`Shield`](crate::Shield).
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Default for ShieldOptions {
    fn default() -> Self {
        Self {
            exact_capacity: names::DEFAULT_EXACT_ENTRIES,
            cidr_capacity: names::DEFAULT_CIDR_ENTRIES,
            allow_capacity: names::DEFAULT_ALLOW_ENTRIES,
            pin_dir: None,
        }
    }
}

impl ShieldOptions {
    /// The capacity of each of `list`'s maps (one per family).
    pub fn capacity(&self, list: ListKind) -> u32 {
        match list {
            ListKind::BlockExact => self.exact_capacity,
            ListKind::BlockCidr => self.cidr_capacity,
            ListKind::Allow => self.allow_capacity,
        }
    }

    fn capacity_slot(&mut self, list: ListKind) -> &mut u32 {
        match list {
            ListKind::BlockExact => &mut self.exact_capacity,
            ListKind::BlockCidr => &mut self.cidr_capacity,
            ListKind::Allow => &mut self.allow_capacity,
        }
    }
}

/// The kernel's own accounting of a program (needs [`Shield::enable_run_stats`](crate::Shield::enable_run_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Total time spent in the program, in nanoseconds.
    pub run_time_ns: u64,
    /// Number of runs.
    pub run_count: u64,
}

/// The loaded object: its programs and the maps no typed handle has taken.
pub(crate) struct Object {
    bpf: Ebpf,
}

/// The mark, in a maps directory, that its summaries were counted from its lists: a symbolic
/// link (bpffs takes links, not files), written after counting; without it the next load counts
/// again.
const SUMMARIES_COUNTED: &str = "summaries-counted";

/// Whether `maps_dir` has the mark of counted summaries.
fn summaries_counted(maps_dir: &Path) -> bool {
    // The link's target is not a file: look at the link itself.
    std::fs::symlink_metadata(maps_dir.join(SUMMARIES_COUNTED)).is_ok()
}

/// Marks `maps_dir`'s summaries as counted (once every list entry is in them).
pub(crate) fn mark_summaries_counted(maps_dir: &Path) -> Result<(), Error> {
    let path = maps_dir.join(SUMMARIES_COUNTED);
    match std::os::unix::fs::symlink("1", &path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Pin {
            path,
            message: format!("marking the summaries counted: {e}"),
        }),
    }
}

/// What [`Object::load`] found about pins.
pub(crate) struct Loaded {
    pub(crate) object: Object,
    /// True when the summaries were made empty next to lists that may hold entries (pins from
    /// a version without them, or never marked counted): they must be counted before the
    /// program runs.
    pub(crate) summaries_fresh: bool,
    /// The pinned maps' directory, where the mark goes once they are counted.
    pub(crate) maps_dir: Option<PathBuf>,
}

impl Object {
    /// Loads the object and its XDP program. With a pin directory, maps pinned there are
    /// reused, and `options` is corrected to the capacities they were created with. Pins of an
    /// older map layout are migrated first; pins of a newer one are refused (see `layout`).
    pub(crate) fn load(options: &mut ShieldOptions) -> Result<Loaded, Error> {
        let Some(dir) = options.pin_dir.clone() else {
            return Self::load_at(options, None);
        };
        Self::load_pinned(options, &dir)
    }

    /// Loads another build of the program, unpinned (the benchmark measures an older object
    /// side by side with this one). Its maps must be the ones this version expects.
    pub(crate) fn load_other(options: &mut ShieldOptions, object: &[u8]) -> Result<Loaded, Error> {
        Self::load_from(options, None, object)
    }

    fn load_pinned(options: &mut ShieldOptions, dir: &Path) -> Result<Loaded, Error> {
        let stamp = super::layout::prepare(dir, options)?;
        let loaded = Self::load_at(options, Some(&dir.join("maps")))?;
        if stamp {
            // Only now: a stamp over no maps would say nothing true.
            super::layout::write(dir, super::layout::LAYOUT)?;
        }
        Ok(loaded)
    }

    /// Loads the object with its maps pinned in (and reused from) `maps_dir`, if given,
    /// whatever layout that directory's pins have.
    pub(crate) fn load_at(
        options: &mut ShieldOptions,
        maps_dir: Option<&Path>,
    ) -> Result<Loaded, Error> {
        Self::load_from(options, maps_dir, XDP_OBJECT)
    }

    fn load_from(
        options: &mut ShieldOptions,
        maps_dir: Option<&Path>,
        object_bytes: &[u8],
    ) -> Result<Loaded, Error> {
        let mut loader = EbpfLoader::new();
        let mut summaries_fresh = true;
        if let Some(maps_dir) = maps_dir {
            // Fresh when any summary is new next to pinned lists, or when the summaries were
            // never all counted there (pins of a version without some of them, or a crash
            // between pinning new summaries and counting them): counting every entry again only
            // over-counts the summaries that were there (a "maybe" too many, never a "no" for a
            // listed address).
            summaries_fresh = !summaries_counted(maps_dir)
                || groundzero_common::summary::ALL_SUMMARIES
                    .iter()
                    .any(|name| !maps_dir.join(name).exists());
            super::pins::ensure_dir(maps_dir)?;
            for name in names::ALL_MAPS {
                loader.map_pin_path(name, maps_dir.join(name));
            }
        }
        for list in ListKind::ALL {
            for family in Family::ALL {
                loader.map_max_entries(list.map_name(family), options.capacity(list));
            }
        }
        let bpf = loader.load(object_bytes).map_err(Error::Load)?;
        let mut object = Object { bpf };
        if maps_dir.is_some() {
            object.adopt_capacities(options)?;
        }
        object.load_xdp()?;
        Ok(Loaded {
            object,
            summaries_fresh,
            maps_dir: maps_dir.map(Path::to_path_buf),
        })
    }

    /// The verifier gives up with EAGAIN when a signal arrives while it works (a stop/continue,
    /// a timer); libbpf retries those loads, and so do we, a bounded number of times.
    fn load_xdp(&mut self) -> Result<(), Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.xdp_mut()?.load() {
                Ok(()) => return Ok(()),
                Err(ProgramError::LoadError { io_error, .. })
                    if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts < 5 =>
                {
                    log::debug!("verifier interrupted (EAGAIN), retrying the load");
                }
                Err(e) => return Err(Error::Program(e)),
            }
        }
    }

    /// When pinned maps are reused, their sizes are the ones they were created with: take those
    /// (and say so) rather than pretend the requested ones are in force.
    fn adopt_capacities(&self, options: &mut ShieldOptions) -> Result<(), Error> {
        for list in ListKind::ALL {
            let name = list.map_name(Family::V4);
            let actual = list_map_data(self.map(name)?, name)?
                .info()
                .map_err(|source| Error::MapRead { map: name, source })?
                .max_entries();
            let wanted = options.capacity_slot(list);
            if actual != *wanted {
                log::warn!(
                    "pinned map {name} has {actual} slots, not the {wanted} asked for; keeping the \
                     pinned map and its entries (remove the pins with `groundzero cleanup` to resize)"
                );
                *wanted = actual;
            }
        }
        Ok(())
    }

    /// A map of the object, if no handle has taken it.
    pub(crate) fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.bpf.map(name).ok_or(Error::NoMap { map: name })
    }

    /// Takes a map out of the object, for a typed handle that owns it.
    pub(crate) fn take_map(&mut self, name: &'static str) -> Result<Map, Error> {
        self.bpf.take_map(name).ok_or(Error::NoMap { map: name })
    }

    /// A program of the object, as its concrete type.
    pub(crate) fn program<T>(&self, name: &'static str) -> Result<&T, Error>
    where
        for<'a> &'a T: TryFrom<&'a Program, Error = ProgramError>,
    {
        self.bpf
            .program(name)
            .ok_or(Error::NoProgram { program: name })?
            .try_into()
            .map_err(Error::Program)
    }

    /// A program of the object, as its concrete type, to load, attach or detach.
    pub(crate) fn program_mut<T>(&mut self, name: &'static str) -> Result<&mut T, Error>
    where
        for<'a> &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
    {
        self.bpf
            .program_mut(name)
            .ok_or(Error::NoProgram { program: name })?
            .try_into()
            .map_err(Error::Program)
    }

    /// The XDP verdict program.
    pub(crate) fn xdp_mut(&mut self) -> Result<&mut Xdp, Error> {
        self.program_mut(names::XDP_PROGRAM)
    }

    /// The kernel's information on the loaded XDP program.
    fn xdp_info(&self) -> Result<aya::programs::ProgramInfo, Error> {
        let program: &Xdp = self.program(names::XDP_PROGRAM)?;
        program.info().map_err(|source| Error::ProgramInfo {
            program: names::XDP_PROGRAM,
            source,
        })
    }

    /// The kernel's id of the loaded XDP program (as `bpftool prog show` lists it).
    pub(crate) fn xdp_id(&self) -> Result<u32, Error> {
        Ok(self.xdp_info()?.id())
    }

    /// The kernel's run time and run count of the XDP program (zero unless run stats are on).
    pub(crate) fn xdp_stats(&self) -> Result<ProgramStats, Error> {
        let info = self.xdp_info()?;
        Ok(ProgramStats {
            run_time_ns: info.run_time().as_nanos() as u64,
            run_count: info.run_count(),
        })
    }

    /// The kernel's run-time accounting of one program of the object, if it is loaded.
    pub(crate) fn loaded_program_stats(&self, name: &str) -> Option<ProgramStats> {
        let info = self.bpf.program(name)?.info().ok()?;
        Some(ProgramStats {
            run_time_ns: info.run_time().as_nanos() as u64,
            run_count: info.run_count(),
        })
    }

    /// Runs the XDP program `repeat` times on `packet` (BPF_PROG_TEST_RUN); returns the action
    /// and the kernel's mean time per run.
    pub(crate) fn test_run(
        &self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(Action, std::time::Duration), Error> {
        let program: &Xdp = self.program(names::XDP_PROGRAM)?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                repeat,
                ..Default::default()
            })
            .map_err(Error::TestRun)?;
        let action = match result.return_value {
            1 => Action::Drop,
            2 => Action::Pass,
            other => panic!("the XDP program returned {other}, which it has no code path for"),
        };
        Ok((action, result.duration))
    }
}

/// The data of a list map (a hash or an LPM trie).
pub(crate) fn list_map_data<'a>(map: &'a Map, name: &'static str) -> Result<&'a MapData, Error> {
    match map {
        Map::HashMap(d) | Map::LpmTrie(d) => Ok(d),
        _ => Err(Error::NoMap { map: name }),
    }
}
