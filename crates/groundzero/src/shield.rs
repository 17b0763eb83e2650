//! [`Shield`]: the loaded XDP verdict program, its lists, its counters and its attachments.

use std::{fmt, time::Duration};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use groundzero_common::{
    maps::{self as names, Config, Counter, EntryStats, InterfaceCounters},
    Action, Reason,
};
use ipnet::IpNet;

use crate::{counters::Counters, error::Error, program::XDP_OBJECT, ListKind};

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
    /// `None`: everything lives and dies with the [`Shield`].
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

/// How to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode if the driver supports it, else generic.
    #[default]
    Auto,
    /// Native only: fail rather than fall back.
    Native,
    /// Generic (skb) mode: works on every interface, runs after the skb is allocated.
    Generic,
}

/// The mode an attachment actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveMode {
    Native,
    Generic,
}

impl fmt::Display for ActiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActiveMode::Native => "native",
            ActiveMode::Generic => "generic",
        })
    }
}

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    /// The interface's index in the namespace it was attached in.
    pub ifindex: u32,
    pub mode: ActiveMode,
    /// True if an attachment pinned by an earlier process was taken over (its program replaced
    /// atomically by this one) rather than made anew.
    pub adopted: bool,
    link: LinkHandle,
}

#[derive(Debug)]
enum LinkHandle {
    /// Managed by aya: detached when the shield is dropped (or, if it is also pinned, kept by
    /// the pin).
    Managed(aya::programs::xdp::XdpLinkId),
    /// Made and pinned by this shield; outlives it.
    Pinned(aya::programs::links::PinnedLink),
}

/// A list entry with the kernel's hit statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub net: IpNet,
    pub hits: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last hit; 0 if never hit.
    pub last_hit_ns: u64,
}

/// The loaded XDP verdict program.
///
/// Dropping a `Shield` detaches it from every interface and frees its maps.
pub struct Shield {
    bpf: Ebpf,
    options: ShieldOptions,
    attachments: Vec<Attachment>,
    /// Inserts refused because a map was full, since load.
    failed_inserts: u64,
    /// Holds BPF_ENABLE_STATS(RUN_TIME) open while wanted; the kernel counts run time and run
    /// count of every BPF program while any such fd exists.
    stats_fd: Option<std::os::fd::OwnedFd>,
    /// Journey observer programs (attached only while tracing is on).
    observers: crate::journey::tracer::Observers,
    /// The prefix summaries in front of the tries, counted on every trie insert and removal.
    summaries: crate::summary::Summaries,
}

/// The kernel's own accounting of the XDP program (needs [`Shield::enable_run_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Total time spent in the program, in nanoseconds.
    pub run_time_ns: u64,
    /// Number of runs.
    pub run_count: u64,
}

impl fmt::Debug for Shield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shield")
            .field("options", &self.options)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl Shield {
    /// Loads the embedded XDP program and creates its maps. Needs root (CAP_BPF, CAP_NET_ADMIN).
    pub fn load(options: ShieldOptions) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        // Pins from a version without prefix summaries: the tries come back with their entries,
        // the summaries are made empty, and must be counted before the program runs.
        let mut summaries_fresh = true;
        if let Some(dir) = &options.pin_dir {
            let maps_dir = dir.join("maps");
            summaries_fresh = !maps_dir
                .join(groundzero_common::summary::ALLOW_SUM_V4)
                .exists();
            crate::pins::ensure_dir(&maps_dir)?;
            for name in names::ALL_MAPS {
                loader.map_pin_path(name, maps_dir.join(name));
            }
        }
        let mut bpf = loader
            .map_max_entries(names::BLOCK_V4, options.exact_capacity)
            .map_max_entries(names::BLOCK_V6, options.exact_capacity)
            .map_max_entries(names::BLOCK_NET_V4, options.cidr_capacity)
            .map_max_entries(names::BLOCK_NET_V6, options.cidr_capacity)
            .map_max_entries(names::ALLOW_V4, options.allow_capacity)
            .map_max_entries(names::ALLOW_V6, options.allow_capacity)
            .load(XDP_OBJECT)
            .map_err(Error::Load)?;
        let mut options = options;
        if options.pin_dir.is_some() {
            crate::pins::adopt_capacities(&bpf, &mut options)?;
        }
        // The verifier gives up with EAGAIN when a signal arrives while it works (a stop/continue,
        // a timer); libbpf retries those loads, and so do we, a bounded number of times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match xdp_mut(&mut bpf)?.load() {
                Ok(()) => break,
                Err(ProgramError::LoadError { io_error, .. })
                    if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts < 5 =>
                {
                    log::debug!("verifier interrupted (EAGAIN), retrying the load");
                }
                Err(e) => return Err(Error::Program(e)),
            }
        }
        let summaries = crate::summary::Summaries::map(&bpf)?;
        let shield = Self {
            bpf,
            options,
            attachments: Vec::new(),
            failed_inserts: 0,
            stats_fd: None,
            observers: Default::default(),
            summaries,
        };
        if summaries_fresh {
            for list in [ListKind::Allow, ListKind::BlockCidr] {
                for entry in shield.list(list)? {
                    shield.summaries.add(list, &entry.net);
                }
            }
        }
        Ok(shield)
    }

    /// The prefix summaries' counts of `list` at `addr`'s keys (one for IPv4, two for IPv6):
    /// the XDP program walks the trie only when none is 0. For tests and diagnostics.
    pub fn summary_counts(&self, list: ListKind, addr: std::net::IpAddr) -> Vec<u8> {
        self.summaries.counts_at(list, addr)
    }

    pub fn options(&self) -> &ShieldOptions {
        &self.options
    }

    /// Inserts refused because a map was full, since this shield was loaded.
    pub fn failed_inserts(&self) -> u64 {
        self.failed_inserts
    }

    /// Asks the kernel to account run time and run count for BPF programs (a small cost on every
    /// run of every program, which is why the kernel keeps it off by default).
    pub fn enable_run_stats(&mut self) -> Result<(), Error> {
        if self.stats_fd.is_none() {
            let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| Error::Program(ProgramError::SyscallError(e)))?;
            self.stats_fd = Some(fd);
        }
        Ok(())
    }

    /// The kernel's run time and run count of the XDP program (zero unless run stats are on).
    pub fn program_stats(&self) -> Result<ProgramStats, Error> {
        let program: &Xdp = self
            .bpf
            .program(names::XDP_PROGRAM)
            .expect("the embedded object has the XDP program")
            .try_into()
            .map_err(Error::Program)?;
        let info = program.info().map_err(Error::Program)?;
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

    /// Attaches to `interface` (in the caller's network namespace) and returns the mode it got.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<ActiveMode, Error> {
        if self.attachments.iter().any(|a| a.interface == interface) {
            return Err(Error::AlreadyAttached {
                interface: interface.to_string(),
            });
        }
        if let Some(dir) = self.options.pin_dir.clone() {
            if let Some(active) = self.adopt_pinned(interface, &dir)? {
                return Ok(active);
            }
        }
        let program = xdp_mut(&mut self.bpf)?;
        let attempt = |program: &mut Xdp, active: ActiveMode| {
            let xdp_mode = match active {
                ActiveMode::Native => XdpMode::Driver,
                ActiveMode::Generic => XdpMode::Skb,
            };
            program
                .attach(interface, xdp_mode)
                .map_err(|source| match source {
                    ProgramError::UnknownInterface { .. } => Error::NoSuchInterface {
                        interface: interface.to_string(),
                    },
                    source => Error::Attach {
                        interface: interface.to_string(),
                        mode: match active {
                            ActiveMode::Native => "native",
                            ActiveMode::Generic => "generic",
                        },
                        source,
                    },
                })
        };
        let (link, active) = match mode {
            AttachMode::Native => (attempt(program, ActiveMode::Native)?, ActiveMode::Native),
            AttachMode::Generic => (attempt(program, ActiveMode::Generic)?, ActiveMode::Generic),
            AttachMode::Auto => match attempt(program, ActiveMode::Native) {
                Ok(link) => (link, ActiveMode::Native),
                Err(e @ Error::NoSuchInterface { .. }) => return Err(e),
                Err(native_error) => {
                    log::info!("native XDP on {interface} failed ({native_error}); using generic");
                    (attempt(program, ActiveMode::Generic)?, ActiveMode::Generic)
                }
            },
        };
        let link = match &self.options.pin_dir {
            None => LinkHandle::Managed(link),
            Some(dir) => {
                let path = crate::pins::link_path(dir, interface, active);
                let pinned = crate::pins::pin_link(xdp_mut(&mut self.bpf)?, link, &path)?;
                LinkHandle::Pinned(pinned)
            }
        };
        self.record(interface, active, false, link);
        Ok(active)
    }

    fn record(&mut self, interface: &str, mode: ActiveMode, adopted: bool, link: LinkHandle) {
        // Looked up after attaching, in the same (caller's) namespace that attach used.
        let ifindex = nix::net::if_::if_nametoindex(interface).unwrap_or(0);
        self.attachments.push(Attachment {
            interface: interface.to_string(),
            ifindex,
            mode,
            adopted,
            link,
        });
    }

    /// Takes over an XDP link pinned by an earlier process: the kernel swaps the program in the
    /// link atomically (bpf_link_update), so there is no moment without filtering.
    fn adopt_pinned(
        &mut self,
        interface: &str,
        dir: &std::path::Path,
    ) -> Result<Option<ActiveMode>, Error> {
        let Some((path, mode)) = crate::pins::find_link(dir, interface) else {
            return Ok(None);
        };
        let program = xdp_mut(&mut self.bpf)?;
        match crate::pins::adopt_link(program, &path)? {
            Some(id) => {
                self.record(interface, mode, true, LinkHandle::Managed(id));
                Ok(Some(mode))
            }
            None => {
                log::warn!(
                    "{}: pinned link is defunct (interface gone?); re-attaching",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// Detaches from `interface`.
    pub fn detach(&mut self, interface: &str) -> Result<(), Error> {
        let index = self
            .attachments
            .iter()
            .position(|a| a.interface == interface)
            .ok_or_else(|| Error::NotAttached {
                interface: interface.to_string(),
            })?;
        let attachment = self.attachments.remove(index);
        if let Some(dir) = &self.options.pin_dir {
            // Unpinning is what really detaches a pinned link once our fd is closed too.
            let _ = std::fs::remove_file(crate::pins::link_path(dir, interface, attachment.mode));
        }
        match attachment.link {
            LinkHandle::Managed(id) => xdp_mut(&mut self.bpf)?.detach(id).map_err(Error::Program),
            LinkHandle::Pinned(pinned) => {
                drop(pinned);
                Ok(())
            }
        }
    }

    /// The interfaces the program is attached to, with the mode each got.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Blocks a source address (exact, O(1) hash) or prefix (LPM trie). Idempotent: blocking an
    /// entry twice keeps its hit count.
    pub fn block(&mut self, net: IpNet) -> Result<(), Error> {
        self.insert(list_for_block(&net), net).map(drop)
    }

    /// Blocks every entry or none: if one fails (a full map), those already added are removed.
    pub fn block_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        self.insert_all(nets, list_for_block)
    }

    /// Removes a block. Returns whether it was there.
    pub fn unblock(&mut self, net: IpNet) -> Result<bool, Error> {
        self.remove(list_for_block(&net), net)
    }

    /// Allows a source address or prefix: the allowlist wins over every block.
    pub fn allow(&mut self, net: IpNet) -> Result<(), Error> {
        self.insert(ListKind::Allow, net).map(drop)
    }

    /// Allows every entry or none.
    pub fn allow_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        self.insert_all(nets, |_| ListKind::Allow)
    }

    /// Removes an allowlist entry. Returns whether it was there.
    pub fn unallow(&mut self, net: IpNet) -> Result<bool, Error> {
        self.remove(ListKind::Allow, net)
    }

    /// Every blocked address and prefix with its hits.
    pub fn blocked(&self) -> Result<Vec<ListEntry>, Error> {
        let mut entries = self.list(ListKind::BlockExact)?;
        entries.extend(self.list(ListKind::BlockCidr)?);
        Ok(entries)
    }

    /// Hit statistics of the blocklist entry `net`, which the caller knows is present.
    pub fn blocked_entry(&self, net: IpNet) -> Result<Option<ListEntry>, Error> {
        self.lookup(list_for_block(&net), net)
    }

    /// Hit statistics of the allowlist entry `net`, which the caller knows is present.
    pub fn allowed_entry(&self, net: IpNet) -> Result<Option<ListEntry>, Error> {
        self.lookup(ListKind::Allow, net)
    }

    /// A lookup in the kernel map. For prefixes the kernel answers with the longest *covering*
    /// prefix (LPM semantics hold for user-space lookups too), so the stats are `net`'s only if
    /// `net` is itself in the trie: callers ask only about entries they know are there.
    fn lookup(&self, list: ListKind, net: IpNet) -> Result<Option<ListEntry>, Error> {
        let name = map_name(list, &net);
        let map = self.map(name)?;
        let result = match (list, net) {
            (ListKind::BlockExact, IpNet::V4(n)) => {
                HashMap::<_, [u8; 4], EntryStats>::try_from(map)
                    .and_then(|m| m.get(&n.addr().octets(), 0))
            }
            (ListKind::BlockExact, IpNet::V6(n)) => {
                HashMap::<_, [u8; 16], EntryStats>::try_from(map)
                    .and_then(|m| m.get(&n.addr().octets(), 0))
            }
            (_, IpNet::V4(n)) => LpmTrie::<_, [u8; 4], EntryStats>::try_from(map)
                .and_then(|m| m.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0)),
            (_, IpNet::V6(n)) => LpmTrie::<_, [u8; 16], EntryStats>::try_from(map)
                .and_then(|m| m.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0)),
        };
        match result {
            Ok(stats) => Ok(Some(ListEntry {
                net,
                hits: stats.hits,
                last_hit_ns: stats.last_hit_ns,
            })),
            Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(Error::MapRead { map: name, source }),
        }
    }

    /// Every allowed address and prefix with its hits.
    pub fn allowed(&self) -> Result<Vec<ListEntry>, Error> {
        self.list(ListKind::Allow)
    }

    /// Per-reason packet and byte counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let read_err = |source| Error::MapRead {
            map: names::COUNTERS,
            source,
        };
        let map: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.map(names::COUNTERS)?).map_err(read_err)?;
        let mut slots = Vec::with_capacity(Reason::ALL.len() * 2);
        for reason in Reason::ALL {
            let per_cpu = map.get(&(reason as u32), 0).map_err(read_err)?;
            slots.extend(per_cpu.iter().map(|c| (reason, *c)));
        }
        Ok(Counters::from_slots(slots))
    }

    /// Per-reason counters of one interface (by ifindex), summed over CPUs. Interfaces with an
    /// ifindex of 256 or more share the counters of ifindex 0.
    pub fn interface_counters(&self, ifindex: u32) -> Result<Counters, Error> {
        let read_err = |source| Error::MapRead {
            map: names::INTERFACE_COUNTERS,
            source,
        };
        let map: PerCpuArray<&MapData, InterfaceCounters> =
            PerCpuArray::try_from(self.map(names::INTERFACE_COUNTERS)?).map_err(read_err)?;
        let per_cpu = map
            .get(&names::interface_slot(ifindex), 0)
            .map_err(read_err)?;
        Ok(Counters::from_slots(per_cpu.iter().flat_map(|cpu| {
            Reason::ALL.iter().map(|&r| (r, cpu.by_reason[r as usize]))
        })))
    }

    /// Monitor (dry-run) mode: every packet passes; block matches count as `monitor_*`.
    pub fn set_monitor(&mut self, on: bool) -> Result<(), Error> {
        self.update_config(|config| {
            config.flags = if on {
                config.flags | Config::MONITOR
            } else {
                config.flags & !Config::MONITOR
            };
        })
    }

    /// The runtime switches the XDP program reads on every packet.
    pub fn config(&self) -> Result<Config, Error> {
        let err = |source| Error::MapRead {
            map: names::CONFIG,
            source,
        };
        let map: Array<&MapData, Config> =
            Array::try_from(self.map(names::CONFIG)?).map_err(err)?;
        map.get(&0, 0).map_err(err)
    }

    /// Read-modify-write of the config map (one writer: this process).
    pub(crate) fn update_config(&mut self, f: impl FnOnce(&mut Config)) -> Result<(), Error> {
        let err = |source| Error::MapRead {
            map: names::CONFIG,
            source,
        };
        let mut map: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut(names::CONFIG)?).map_err(err)?;
        let mut config = map.get(&0, 0).map_err(err)?;
        f(&mut config);
        map.set(0, config, 0).map_err(err)
    }

    pub(crate) fn observers(&self) -> &crate::journey::tracer::Observers {
        &self.observers
    }

    pub(crate) fn observers_mut(&mut self) -> &mut crate::journey::tracer::Observers {
        &mut self.observers
    }

    /// A program of the embedded object, as its concrete type.
    pub(crate) fn program_mut<T>(&mut self, name: &'static str) -> Result<&mut T, Error>
    where
        for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        self.bpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("the embedded object has program {name}"))
            .try_into()
            .map_err(Error::Program)
    }

    /// Takes a map out of the object (for ring buffers a reader owns).
    pub(crate) fn take_map(&mut self, name: &'static str) -> Result<aya::maps::Map, Error> {
        self.bpf
            .take_map(name)
            .ok_or_else(|| Error::Journey(format!("the `{name}` map was already taken")))
    }

    pub(crate) fn map_mut_pub(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.map_mut(name)
    }

    pub fn monitor(&self) -> Result<bool, Error> {
        let err = |source| Error::MapRead {
            map: names::CONFIG,
            source,
        };
        let map: Array<&MapData, Config> =
            Array::try_from(self.map(names::CONFIG)?).map_err(err)?;
        Ok(map.get(&0, 0).map_err(err)?.monitor())
    }

    /// Runs the program once on `packet` (a whole Ethernet frame) with BPF_PROG_TEST_RUN, as if
    /// it had arrived on an interface. Counters and hit statistics are updated as for real traffic.
    pub fn test_run(&self, packet: &[u8]) -> Result<Action, Error> {
        Ok(self.test_run_repeat(packet, 1)?.0)
    }

    /// Runs the program `repeat` times on `packet`; returns the action and the kernel's mean
    /// time per run.
    pub fn test_run_repeat(&self, packet: &[u8], repeat: u32) -> Result<(Action, Duration), Error> {
        let program: &Xdp = self
            .bpf
            .program(names::XDP_PROGRAM)
            .expect("the embedded object has the XDP program")
            .try_into()
            .map_err(Error::Program)?;
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

    pub(crate) fn map(&self, name: &'static str) -> Result<&aya::maps::Map, Error> {
        Ok(self
            .bpf
            .map(name)
            .unwrap_or_else(|| panic!("the embedded object has map {name}")))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        Ok(self
            .bpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("the embedded object has map {name}")))
    }

    fn capacity(&self, list: ListKind) -> u32 {
        match list {
            ListKind::BlockExact => self.options.exact_capacity,
            ListKind::BlockCidr => self.options.cidr_capacity,
            ListKind::Allow => self.options.allow_capacity,
        }
    }

    fn insert_all(
        &mut self,
        nets: &[IpNet],
        list_of: impl Fn(&IpNet) -> ListKind,
    ) -> Result<(), Error> {
        let mut added = Vec::new();
        let result = self.insert_all_tracked(nets, &list_of, &mut added);
        if result.is_err() {
            // Undo what this call added (not what was there before): nothing half applied.
            self.remove_all_of(&added);
        }
        result
    }

    fn insert_all_tracked(
        &mut self,
        nets: &[IpNet],
        list_of: &impl Fn(&IpNet) -> ListKind,
        added: &mut Vec<(ListKind, IpNet)>,
    ) -> Result<(), Error> {
        let (mut exact4, mut exact6) = (Vec::new(), Vec::new());
        for &net in nets {
            let list = list_of(&net);
            match (list, net) {
                (ListKind::BlockExact, IpNet::V4(_)) => exact4.push(net),
                (ListKind::BlockExact, IpNet::V6(_)) => exact6.push(net),
                _ => {
                    if self.insert(list, net)? {
                        added.push((list, net));
                    }
                }
            }
        }
        self.insert_exact_batch(names::BLOCK_V4, &exact4, v4_octets, added)?;
        self.insert_exact_batch(names::BLOCK_V6, &exact6, v6_octets, added)
    }

    /// Exact entries go in with BPF_MAP_UPDATE_BATCH. The kernel's batch update cannot be told
    /// "never overwrite", so keys already in the map are read first (BPF_MAP_LOOKUP_BATCH) and
    /// left alone: an existing entry keeps its hits. Small inserts go one by one.
    ///
    /// Keys stay fixed-size arrays from start to end (no allocation per entry): at a million
    /// entries the user-space side otherwise costs as much as the kernel's.
    fn insert_exact_batch<const N: usize>(
        &mut self,
        map: &'static str,
        nets: &[IpNet],
        key_of: fn(&IpNet) -> [u8; N],
        added: &mut Vec<(ListKind, IpNet)>,
    ) -> Result<(), Error>
    where
        [u8; N]: Default,
    {
        const CHUNK: usize = 1 << 16;
        const ONE_BY_ONE: usize = 64;
        if nets.len() <= ONE_BY_ONE {
            for &net in nets {
                if self.insert(ListKind::BlockExact, net)? {
                    added.push((ListKind::BlockExact, net));
                }
            }
            return Ok(());
        }
        let fd = self.list_map_fd(map)?;
        let batch_err =
            |call: &'static str, entry: IpNet, io_error: std::io::Error| Error::MapUpdate {
                list: ListKind::BlockExact,
                entry,
                source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
            };
        let existing: std::collections::HashSet<[u8; N]> =
            crate::batch::entries::<[u8; N], EntryStats>(fd_of(&fd))
                .map_err(|e| batch_err("BPF_MAP_LOOKUP_BATCH", nets[0], e))?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        // An exact entry is one address, so its key identifies it: deduplicate on keys, keeping
        // each key's first occurrence, in the caller's order. By sorting, not with a hash set:
        // a million inserts into a set that outgrows the caches cost 200-400 ms here, the sort
        // a fraction of that.
        let mut sorted: Vec<([u8; N], u32)> = nets
            .iter()
            .zip(0u32..)
            .map(|(n, i)| (key_of(n), i))
            .collect();
        sorted.sort_unstable();
        let mut keep = vec![false; nets.len()];
        for (j, (key, i)) in sorted.iter().enumerate() {
            let first = j == 0 || sorted[j - 1].0 != *key;
            keep[*i as usize] = first && !existing.contains(key);
        }
        drop(sorted);
        let (new, keys): (Vec<IpNet>, Vec<[u8; N]>) = nets
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(n, _)| (*n, key_of(n)))
            .unzip();
        let free = self.options.exact_capacity as usize
            - existing.len().min(self.options.exact_capacity as usize);
        if new.len() > free {
            // Refuse up front rather than fill the map and roll back.
            self.failed_inserts += 1;
            return Err(Error::MapFull {
                list: ListKind::BlockExact,
                capacity: self.options.exact_capacity,
                entry: new[free],
            });
        }
        let values = vec![EntryStats::default(); new.len()];
        added.reserve(new.len());
        for start in (0..new.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(new.len());
            let (_, result) =
                crate::batch::update(fd_of(&fd), &keys[start..end], &values[start..end], 0);
            // How far a failed batch got is not reliably reported: count it all as added so
            // the caller's rollback removes whatever did go in.
            added.extend(new[start..end].iter().map(|n| (ListKind::BlockExact, *n)));
            if let Err(e) = result {
                return Err(match e.raw_os_error() {
                    Some(libc::E2BIG) | Some(libc::ENOSPC) => {
                        self.failed_inserts += 1;
                        Error::MapFull {
                            list: ListKind::BlockExact,
                            capacity: self.options.exact_capacity,
                            entry: new[start],
                        }
                    }
                    _ => batch_err("BPF_MAP_UPDATE_BATCH", new[start], e),
                });
            }
        }
        Ok(())
    }

    /// Removes every blocked entry in `nets` (exact ones in batches). Absent ones are ignored.
    pub fn unblock_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        let pairs: Vec<(ListKind, IpNet)> = nets.iter().map(|n| (list_for_block(n), *n)).collect();
        let (exact, others): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .partition(|(l, _)| *l == ListKind::BlockExact);
        for (list, net) in others {
            self.remove(list, net)?;
        }
        for (map, want_v4) in [(names::BLOCK_V4, true), (names::BLOCK_V6, false)] {
            let group: Vec<IpNet> = exact
                .iter()
                .map(|(_, n)| *n)
                .filter(|n| matches!(n, IpNet::V4(_)) == want_v4)
                .collect();
            if group.is_empty() {
                continue;
            }
            let fd = self.list_map_fd(map)?;
            for chunk in group.chunks(1 << 16) {
                let (_, result) = if want_v4 {
                    let keys: Vec<[u8; 4]> = chunk.iter().map(v4_octets).collect();
                    crate::batch::delete(fd_of(&fd), &keys)
                } else {
                    let keys: Vec<[u8; 16]> = chunk.iter().map(v6_octets).collect();
                    crate::batch::delete(fd_of(&fd), &keys)
                };
                // A batch stops at the first absent key (ENOENT): finish that chunk one by one.
                if result.is_err() {
                    for &net in chunk {
                        self.remove(ListKind::BlockExact, net)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn remove_all_of(&mut self, entries: &[(ListKind, IpNet)]) {
        let exact: Vec<IpNet> = entries
            .iter()
            .filter(|(l, _)| *l == ListKind::BlockExact)
            .map(|(_, n)| *n)
            .collect();
        let _ = self.unblock_all(&exact);
        for (list, net) in entries.iter().filter(|(l, _)| *l != ListKind::BlockExact) {
            let _ = self.remove(*list, *net);
        }
    }

    /// Adds `net`; `Ok(false)` if it was already there.
    fn insert(&mut self, list: ListKind, net: IpNet) -> Result<bool, Error> {
        let capacity = self.capacity(list);
        let map_name = map_name(list, &net);
        // Counted before the insert: the summary may say "maybe" for a while, never "no" for an
        // entry that is in the trie.
        self.summaries.add(list, &net);
        let map = self.map_mut(map_name)?;
        // BPF_NOEXIST keeps an existing entry (and its hits) when the same entry is added again.
        let result = match (list, net) {
            (ListKind::BlockExact, IpNet::V4(n)) => {
                HashMap::<_, [u8; 4], EntryStats>::try_from(map)
                    .and_then(|mut m| m.insert(n.addr().octets(), EntryStats::default(), NOEXIST))
            }
            (ListKind::BlockExact, IpNet::V6(n)) => {
                HashMap::<_, [u8; 16], EntryStats>::try_from(map)
                    .and_then(|mut m| m.insert(n.addr().octets(), EntryStats::default(), NOEXIST))
            }
            (_, IpNet::V4(n)) => {
                LpmTrie::<_, [u8; 4], EntryStats>::try_from(map).and_then(|mut m| {
                    m.insert(
                        &Key::new(n.prefix_len().into(), n.addr().octets()),
                        EntryStats::default(),
                        NOEXIST,
                    )
                })
            }
            (_, IpNet::V6(n)) => {
                LpmTrie::<_, [u8; 16], EntryStats>::try_from(map).and_then(|mut m| {
                    let key = Key::new(n.prefix_len().into(), n.addr().octets());
                    m.insert(&key, EntryStats::default(), NOEXIST)
                })
            }
        };
        if result.is_err() {
            self.summaries.sub(list, &net);
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) => match errno(&e) {
                Some(libc::EEXIST) => Ok(false),
                // Hash maps say E2BIG when full, LPM tries ENOSPC.
                Some(libc::E2BIG) | Some(libc::ENOSPC) => {
                    self.failed_inserts += 1;
                    Err(Error::MapFull {
                        list,
                        capacity,
                        entry: net,
                    })
                }
                _ => Err(Error::MapUpdate {
                    list,
                    entry: net,
                    source: e,
                }),
            },
        }
    }

    fn remove(&mut self, list: ListKind, net: IpNet) -> Result<bool, Error> {
        let map = self.map_mut(map_name(list, &net))?;
        let result = match (list, net) {
            (ListKind::BlockExact, IpNet::V4(n)) => {
                HashMap::<_, [u8; 4], EntryStats>::try_from(map)
                    .and_then(|mut m| m.remove(&n.addr().octets()))
            }
            (ListKind::BlockExact, IpNet::V6(n)) => {
                HashMap::<_, [u8; 16], EntryStats>::try_from(map)
                    .and_then(|mut m| m.remove(&n.addr().octets()))
            }
            (_, IpNet::V4(n)) => LpmTrie::<_, [u8; 4], EntryStats>::try_from(map)
                .and_then(|mut m| m.remove(&Key::new(n.prefix_len().into(), n.addr().octets()))),
            (_, IpNet::V6(n)) => LpmTrie::<_, [u8; 16], EntryStats>::try_from(map)
                .and_then(|mut m| m.remove(&Key::new(n.prefix_len().into(), n.addr().octets()))),
        };
        if result.is_ok() {
            // Uncounted only after the removal, for the same reason as in `insert`.
            self.summaries.sub(list, &net);
        }
        match result {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(Error::MapUpdate {
                list,
                entry: net,
                source,
            }),
        }
    }

    fn list(&self, list: ListKind) -> Result<Vec<ListEntry>, Error> {
        let mut out = self.list_reader()?.list(list)?;
        out.sort_by_key(|e| e.net);
        Ok(out)
    }

    /// Read-only handles on the list maps that work without this shield (and without a lock
    /// around it): see [`ListReader`](crate::list_reader::ListReader).
    pub fn list_reader(&self) -> Result<crate::list_reader::ListReader, Error> {
        crate::list_reader::ListReader::new(self)
    }

    /// An fd of its own for one of the six list maps.
    pub(crate) fn list_map_fd(&self, name: &'static str) -> Result<std::os::fd::OwnedFd, Error> {
        use std::os::fd::AsFd;
        let data = match self.map(name)? {
            aya::maps::Map::HashMap(d) | aya::maps::Map::LpmTrie(d) => d,
            _ => unreachable!("list maps are hashes and LPM tries"),
        };
        data.fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::MapRead {
                map: name,
                source: MapError::IoError(e),
            })
    }
}

/// BPF_NOEXIST from the kernel UAPI (include/uapi/linux/bpf.h): create, never overwrite.
const NOEXIST: u64 = 1;

fn v4_octets(net: &IpNet) -> [u8; 4] {
    match net {
        IpNet::V4(n) => n.addr().octets(),
        IpNet::V6(_) => unreachable!("grouped by family"),
    }
}

fn v6_octets(net: &IpNet) -> [u8; 16] {
    match net {
        IpNet::V6(n) => n.addr().octets(),
        IpNet::V4(_) => unreachable!("grouped by family"),
    }
}

fn fd_of(fd: &std::os::fd::OwnedFd) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// Host entries go to the O(1) hash; real prefixes to the LPM trie.
fn list_for_block(net: &IpNet) -> ListKind {
    if net.prefix_len() == net.max_prefix_len() {
        ListKind::BlockExact
    } else {
        ListKind::BlockCidr
    }
}

fn map_name(list: ListKind, net: &IpNet) -> &'static str {
    match (list, net) {
        (ListKind::BlockExact, IpNet::V4(_)) => names::BLOCK_V4,
        (ListKind::BlockExact, IpNet::V6(_)) => names::BLOCK_V6,
        (ListKind::BlockCidr, IpNet::V4(_)) => names::BLOCK_NET_V4,
        (ListKind::BlockCidr, IpNet::V6(_)) => names::BLOCK_NET_V6,
        (ListKind::Allow, IpNet::V4(_)) => names::ALLOW_V4,
        (ListKind::Allow, IpNet::V6(_)) => names::ALLOW_V6,
    }
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        MapError::IoError(io) => io.raw_os_error(),
        _ => None,
    }
}

fn xdp_mut(bpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    bpf.program_mut(names::XDP_PROGRAM)
        .expect("the embedded object has the XDP program")
        .try_into()
        .map_err(Error::Program)
}
