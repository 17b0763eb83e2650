//! [`Shield`]: the loaded XDP verdict program, its lists, its counters and its attachments.
//!
//! A facade: it owns the loaded object and one typed handle per group of maps (see
//! [`crate::bpf`]), and each method delegates to one of them.

use std::{fmt, time::Duration};

use groundzero_common::{
    journey::FlowFilter,
    lists::{ListKind, Side},
    maps::Config,
    Action,
};
use ipnet::IpNet;

pub use crate::bpf::{ActiveMode, AttachMode, Attachment, ListEntry, ProgramStats, ShieldOptions};
use crate::{
    bpf::{
        attach::Attachments,
        capture::{self, CaptureFilter, CaptureMaps, CaptureReader},
        config::ConfigMap,
        counters::CounterMaps,
        list_reader::ListReader,
        lists::Lists,
        object::Object,
        ratelimit::{self, RateEvents, RateMaps},
    },
    counters::Counters,
    error::Error,
    journey::{
        tracer::{self, MissingStage, Tracer},
        JourneyEvents, KernelInfo,
    },
};

/// The loaded XDP verdict program.
///
/// Dropping a `Shield` detaches it from every interface and frees its maps.
pub struct Shield {
    object: Object,
    options: ShieldOptions,
    attachments: Attachments,
    lists: Lists,
    config: ConfigMap,
    counters: CounterMaps,
    rate: RateMaps,
    /// Journey observer programs (attached only while tracing is on).
    tracer: Tracer,
    /// Holds BPF_ENABLE_STATS(RUN_TIME) open while wanted; the kernel counts run time and run
    /// count of every BPF program while any such fd exists.
    stats_fd: Option<std::os::fd::OwnedFd>,
    /// Capture maps, taken out of the object on the first capture.
    capture: Option<CaptureMaps>,
}

impl fmt::Debug for Shield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shield")
            .field("options", &self.options)
            .field("attachments", &self.attachments.all())
            .finish_non_exhaustive()
    }
}

/// Blocked hosts go to the O(1) hash; real prefixes to the LPM trie.
fn block_list(net: &IpNet) -> ListKind {
    ListKind::for_net(Side::Block, net)
}

impl Shield {
    /// Loads the embedded XDP program and creates its maps. Needs root (CAP_BPF, CAP_NET_ADMIN).
    pub fn load(options: ShieldOptions) -> Result<Self, Error> {
        let mut options = options;
        let loaded = Object::load(&mut options)?;
        Self::from_loaded(options, loaded)
    }

    /// Loads another build of the XDP program (an ELF object whose maps are this version's, or
    /// an older layout's: without exact summaries, or with fewer maps),
    /// unpinned: for benchmarks that compare builds side by side.
    #[doc(hidden)]
    pub fn load_object(options: ShieldOptions, object: &[u8]) -> Result<Self, Error> {
        let mut options = ShieldOptions {
            pin_dir: None,
            ..options
        };
        let loaded = Object::load_other(&mut options, object)?;
        Self::from_loaded(options, loaded)
    }

    fn from_loaded(
        options: ShieldOptions,
        loaded: crate::bpf::object::Loaded,
    ) -> Result<Self, Error> {
        let mut object = loaded.object;
        let capacity = ListKind::ALL.map(|list| options.capacity(list));
        let mut config = ConfigMap::take(&mut object)?;
        // A capture bit left set by a crashed capture is cleared by the owner of the pins
        // only: another loader (an application's fallback) must not end a daemon's capture.
        // Likewise the exact slot tables are rebuilt from the hashes by the owner only.
        let owner = options
            .pin_dir
            .as_deref()
            .is_none_or(|dir| crate::bpf::pins::other_holder(dir).is_none());
        if owner {
            capture::clear_stale(&mut config)?;
        }
        let maps_dir = loaded.maps_dir.as_deref();
        let lists = Lists::take(
            &mut object,
            capacity,
            loaded.summaries_fresh,
            maps_dir,
            owner,
        )?;
        if owner {
            // The slots are an index of the hashes now: the program may read them (see
            // `Config::EXACT_SLOTS` for why x86-64 only).
            let on = lists.has_slots() && cfg!(target_arch = "x86_64");
            config.update(|c| {
                c.flags = if on {
                    c.flags | Config::EXACT_SLOTS
                } else {
                    c.flags & !Config::EXACT_SLOTS
                };
            })?;
        }
        if let Some(maps_dir) = &loaded.maps_dir {
            // Only now: a crash before this leaves the pins unmarked, and the next load counts.
            crate::bpf::object::mark_summaries_counted(maps_dir)?;
        }
        Ok(Shield {
            lists,
            config,
            counters: CounterMaps::take(&mut object)?,
            rate: RateMaps::take(&mut object)?,
            object,
            options,
            attachments: Attachments::default(),
            tracer: Tracer::default(),
            stats_fd: None,
            capture: None,
        })
    }

    /// The options in force (capacities are those of pinned maps when they were adopted).
    pub fn options(&self) -> &ShieldOptions {
        &self.options
    }

    // --- attachments -------------------------------------------------------------------------

    /// Attaches to `interface` (in the caller's network namespace) and returns the mode it got.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<ActiveMode, Error> {
        let program = self.object.xdp_mut()?;
        let pin_dir = self.options.pin_dir.as_deref();
        self.attachments.attach(program, pin_dir, interface, mode)
    }

    /// Detaches from `interface`.
    pub fn detach(&mut self, interface: &str) -> Result<(), Error> {
        let program = self.object.xdp_mut()?;
        let pin_dir = self.options.pin_dir.as_deref();
        self.attachments.detach(program, pin_dir, interface)
    }

    /// The interfaces the program is attached to, with the mode each got.
    pub fn attachments(&self) -> &[Attachment] {
        self.attachments.all()
    }

    // --- lists -------------------------------------------------------------------------------

    /// Blocks a source address (exact, O(1) hash) or prefix (LPM trie). Idempotent: blocking an
    /// entry twice keeps its hit count.
    pub fn block(&mut self, net: IpNet) -> Result<(), Error> {
        self.lists.insert(block_list(&net), net).map(drop)
    }

    /// Blocks every entry or none: if one fails (a full map), those already added are removed.
    pub fn block_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        self.lists.insert_all(nets, block_list)
    }

    /// Removes a block. Returns whether it was there.
    pub fn unblock(&mut self, net: IpNet) -> Result<bool, Error> {
        self.lists.remove(block_list(&net), net)
    }

    /// Removes every blocked entry in `nets` (exact ones in batches). Absent ones are ignored.
    pub fn unblock_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        self.lists.remove_all(nets, block_list)
    }

    /// Allows a source address or prefix: the allowlist wins over every block.
    pub fn allow(&mut self, net: IpNet) -> Result<(), Error> {
        self.lists.insert(ListKind::Allow, net).map(drop)
    }

    /// Allows every entry or none.
    pub fn allow_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        self.lists.insert_all(nets, |_| ListKind::Allow)
    }

    /// Removes an allowlist entry. Returns whether it was there.
    pub fn unallow(&mut self, net: IpNet) -> Result<bool, Error> {
        self.lists.remove(ListKind::Allow, net)
    }

    /// Every blocked address and prefix with its hits.
    pub fn blocked(&self) -> Result<Vec<ListEntry>, Error> {
        let mut entries = self.lists.list(ListKind::BlockExact)?;
        entries.extend(self.lists.list(ListKind::BlockCidr)?);
        Ok(entries)
    }

    /// Every allowed address and prefix with its hits.
    pub fn allowed(&self) -> Result<Vec<ListEntry>, Error> {
        self.lists.list(ListKind::Allow)
    }

    /// Hit statistics of the list entry `net` on `side`, which the caller knows is present.
    /// For prefixes the kernel answers with the longest *covering* prefix, so the stats are
    /// `net`'s only if `net` is itself on the list.
    pub fn entry(&self, side: Side, net: IpNet) -> Result<Option<ListEntry>, Error> {
        self.lists.lookup(ListKind::for_net(side, &net), net)
    }

    /// Hit statistics of the blocklist entry `net`, which the caller knows is present.
    pub fn blocked_entry(&self, net: IpNet) -> Result<Option<ListEntry>, Error> {
        self.entry(Side::Block, net)
    }

    /// Hit statistics of the allowlist entry `net`, which the caller knows is present.
    pub fn allowed_entry(&self, net: IpNet) -> Result<Option<ListEntry>, Error> {
        self.entry(Side::Allow, net)
    }

    /// Read-only handles on the list maps that work without this shield (and without a lock
    /// around it): see [`ListReader`].
    pub fn list_reader(&self) -> Result<ListReader, Error> {
        self.lists.reader()
    }

    /// Inserts refused because a map was full, since this shield was loaded.
    pub fn failed_inserts(&self) -> u64 {
        self.lists.failed_inserts()
    }

    /// The summaries' counts of `list` at `addr`'s keys (one for an IPv4 prefix, two for an
    /// IPv6 one, one for an exact address): the XDP program looks in the map only when none is
    /// 0 (it reads the bits that say so, [`Shield::summary_bits`]). For tests and diagnostics.
    pub fn summary_counts(&self, list: ListKind, addr: std::net::IpAddr) -> Vec<u8> {
        self.lists.summary_counts(list, addr)
    }

    /// The summaries' bits of `list` at `addr`'s keys, one per count of
    /// [`Shield::summary_counts`]: what the XDP program reads before the trie or the hash (a
    /// bit is set while its count is not zero; `None` for an object without the bitmaps). For
    /// tests and diagnostics.
    pub fn summary_bits(&self, list: ListKind, addr: std::net::IpAddr) -> Option<Vec<bool>> {
        self.lists.summary_bits(list, addr)
    }

    /// Whether the exact blocked address `addr` has a slot in its family's slot table, where
    /// the XDP program finds it without asking the hash (`None` for an object without the
    /// tables). An entry whose probe window was full has none and is found in the hash. For
    /// tests and diagnostics.
    pub fn exact_slot(&self, addr: std::net::IpAddr) -> Option<bool> {
        self.lists.exact_slot(addr)
    }

    // --- counters and program stats ----------------------------------------------------------

    /// Per-reason packet and byte counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        self.counters.total()
    }

    /// Per-reason counters of one interface (by ifindex), summed over CPUs. Interfaces with an
    /// ifindex of 256 or more share the counters of ifindex 0.
    pub fn interface_counters(&self, ifindex: u32) -> Result<Counters, Error> {
        self.counters.interface(ifindex)
    }

    /// Asks the kernel to account run time and run count for BPF programs (a small cost on every
    /// run of every program, which is why the kernel keeps it off by default).
    pub fn enable_run_stats(&mut self) -> Result<(), Error> {
        if self.stats_fd.is_none() {
            let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(Error::RunStats)?;
            self.stats_fd = Some(fd);
        }
        Ok(())
    }

    /// The kernel's id of this shield's XDP program: what `bpftool prog show id N` and
    /// `bpftool prog dump xlated id N` take.
    pub fn program_id(&self) -> Result<u32, Error> {
        self.object.xdp_id()
    }

    /// The kernel's run time and run count of the XDP program (zero unless run stats are on).
    pub fn program_stats(&self) -> Result<ProgramStats, Error> {
        self.object.xdp_stats()
    }

    // --- config ------------------------------------------------------------------------------

    /// The runtime switches the XDP program reads on every packet.
    pub fn config(&self) -> Result<Config, Error> {
        self.config.get()
    }

    /// Monitor (dry-run) mode: every packet passes; block matches count as `monitor_*`.
    pub fn set_monitor(&mut self, on: bool) -> Result<(), Error> {
        self.config.set_monitor(on)
    }

    /// Whether monitor (dry-run) mode is on.
    pub fn monitor(&self) -> Result<bool, Error> {
        Ok(self.config.get()?.monitor())
    }

    // --- rate limit --------------------------------------------------------------------------

    /// Turns the rate limit on (`rate_pps` > 0) or off (0). `burst` is how many packets a
    /// bucket may pass at once; at least 1. Sources share a bucket per IPv4 `/prefix_v4` and
    /// per IPv6 `/prefix_v6` (1..=32 and 1..=128; 32 and 128 give every address its own):
    /// whoever holds a /64 cannot escape the limit by rotating through its addresses.
    ///
    /// Nothing changes when a length is out of range.
    pub fn set_rate_limit(
        &mut self,
        rate_pps: u32,
        burst: u32,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Result<(), Error> {
        self.config
            .set_rate_limit(rate_pps, burst, prefix_v4, prefix_v6)
    }

    /// Never rate-limit sources in `net` (host bits of `net` are ignored). The exemption is
    /// looked up with the full source address, before its bucket: an exempt host inside a
    /// bucket's prefix neither is limited nor spends that bucket's tokens.
    pub fn rate_exempt(&mut self, net: IpNet) -> Result<(), Error> {
        self.rate.exempt(net)
    }

    /// Ends the exemption of exactly `net` (as given to [`Self::rate_exempt`]; a covering or
    /// covered prefix is another entry). Returns whether it was there.
    pub fn rate_unexempt(&mut self, net: IpNet) -> Result<bool, Error> {
        self.rate.unexempt(net)
    }

    /// Every exempt prefix, IPv4 first, each family sorted: what a caller diffs against the
    /// set it wants, then adds and removes the difference.
    pub fn rate_exempted(&self) -> Result<Vec<IpNet>, Error> {
        self.rate.exempted()
    }

    /// Forgets every rate bucket: every prefix starts again with a full burst. Returns how many
    /// buckets there were. For tests that need a known starting point, and for an operator who
    /// changed the settings and wants them applied to everyone at once.
    pub fn rate_buckets_clear(&mut self) -> Result<usize, Error> {
        self.rate.clear_buckets()
    }

    /// Takes the over-limit report ring buffer (once per shield).
    pub fn rate_events(&mut self) -> Result<RateEvents, Error> {
        ratelimit::take_events(&mut self.object)
    }

    // --- journey tracing ---------------------------------------------------------------------

    /// Starts journey tracing: writes the kernel offsets, attaches the observers (once) and
    /// turns sampling on (1 in `sample_every` of the packets `filter` admits).
    pub fn start_journey(
        &mut self,
        kernel: &KernelInfo,
        sample_every: u32,
        filter: FlowFilter,
    ) -> Result<Vec<MissingStage>, Error> {
        self.tracer.start(
            &mut self.object,
            &mut self.config,
            kernel,
            sample_every,
            filter,
        )
    }

    /// Stops sampling and detaches the observers. Journeys in flight end as incomplete.
    pub fn stop_journey(&mut self) -> Result<(), Error> {
        self.tracer.stop(&mut self.object, &mut self.config)
    }

    /// Changes sampling while tracing runs.
    pub fn set_sampling(&mut self, sample_every: u32, filter: FlowFilter) -> Result<(), Error> {
        tracer::set_sampling(&mut self.config, sample_every, filter)
    }

    /// The kernel's run-time accounting summed over the attached observer programs (zero while
    /// tracing is off, and unless run stats are on: [`Shield::enable_run_stats`]). This is what
    /// tracing costs the host on top of the XDP program's own sampling.
    pub fn observer_stats(&self) -> ProgramStats {
        self.tracer.observer_stats(&self.object)
    }

    /// The packets the journey sample filter admitted, by verdict, as the XDP program counted
    /// them since tracing first started (`None` before it did).
    pub fn journey_filtered(
        &self,
    ) -> Result<Option<groundzero_common::journey::FilteredCounts>, Error> {
        self.tracer.filtered_counts()
    }

    /// Takes the journey event ring buffer (once per shield).
    pub fn journey_events(&mut self) -> Result<JourneyEvents, Error> {
        tracer::take_events(&mut self.object)
    }

    // --- capture ----------------------------------------------------------------------------

    /// Starts capturing what `filter` admits; the capture runs until the reader is stopped or
    /// dropped. One at a time: [`Error::CaptureRunning`] while another reader lives.
    pub fn start_capture(&mut self, filter: &CaptureFilter) -> Result<CaptureReader, Error> {
        if self.capture.is_none() {
            self.capture = Some(CaptureMaps::take(&mut self.object)?);
        }
        match self.capture.as_mut() {
            Some(maps) => maps.start(&mut self.config, filter),
            None => Err(Error::NoMap {
                map: groundzero_common::capture::CAPTURE_EVENTS,
            }),
        }
    }

    // --- test runs ---------------------------------------------------------------------------

    /// Runs the program once on `packet` (a whole Ethernet frame) with BPF_PROG_TEST_RUN, as if
    /// it had arrived on an interface. Counters and hit statistics are updated as for real traffic.
    pub fn test_run(&self, packet: &[u8]) -> Result<Action, Error> {
        Ok(self.test_run_repeat(packet, 1)?.0)
    }

    /// Runs the program `repeat` times on `packet`; returns the action and the kernel's mean
    /// time per run.
    pub fn test_run_repeat(&self, packet: &[u8], repeat: u32) -> Result<(Action, Duration), Error> {
        self.object.test_run(packet, repeat)
    }
}
