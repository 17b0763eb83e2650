//! The per-reason counter maps: the whole program's and each interface's, per CPU.

use aya::maps::{MapData, PerCpuArray};
use groundzero_common::{
    maps::{self as names, Counter, InterfaceCounters},
    Reason,
};

use std::os::fd::AsFd;

use aya::maps::IterableMap;

use super::{object::Object, sys};
use crate::{counters::Counters, error::Error};

/// The counter maps, read into [`Counters`] snapshots.
pub(crate) struct CounterMaps {
    /// The program-wide counters that builds before this one wrote next to the interfaces'
    /// (held, not read: see [`Self::total`]).
    _legacy_total: PerCpuArray<MapData, Counter>,
    per_interface: PerCpuArray<MapData, InterfaceCounters>,
}

fn read_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::MapRead { map, source }
}

impl CounterMaps {
    /// Takes the counter maps out of the loaded object.
    pub(crate) fn take(object: &mut Object) -> Result<Self, Error> {
        Ok(CounterMaps {
            _legacy_total: PerCpuArray::try_from(object.take_map(names::COUNTERS)?)
                .map_err(read_err(names::COUNTERS))?,
            per_interface: PerCpuArray::try_from(object.take_map(names::INTERFACE_COUNTERS)?)
                .map_err(read_err(names::INTERFACE_COUNTERS))?,
        })
    }

    /// Per-reason packet and byte counters, summed over CPUs. The program counts each packet
    /// once, under its interface's slot; the totals are the sum of every slot. (Programs of
    /// earlier builds counted totals apart too, and always in both, so the sum is the same
    /// number for pins they wrote.)
    pub(crate) fn total(&self) -> Result<Counters, Error> {
        // One BPF_MAP_LOOKUP_BATCH for all slots and CPUs: a lookup per slot would be one
        // syscall each, and this runs for every scrape, `/v1/stats` and journey rate reading.
        const SLOTS: usize = names::INTERFACE_SLOTS as usize;
        const _: () = assert!(std::mem::size_of::<InterfaceCounters>().is_multiple_of(8));
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| Error::MapRead {
            map: names::INTERFACE_COUNTERS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: what,
                io_error: source,
            }),
        })?;
        let mut keys = vec![0u32; SLOTS];
        let mut values = vec![InterfaceCounters::default(); SLOTS * cpus];
        let mut token = None;
        let (n, _) = sys::map_lookup_batch(
            self.per_interface.map().fd().as_fd(),
            &mut token,
            &mut keys,
            &mut values,
        )
        .map_err(|io_error| Error::MapRead {
            map: names::INTERFACE_COUNTERS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            }),
        })?;
        let slots = values[..n * cpus].iter().flat_map(|cpu| {
            Reason::ALL
                .iter()
                .map(|&r| (r, cpu.by_reason[r as usize]))
                .filter(|(_, c)| c.packets != 0)
        });
        Ok(Counters::from_slots(slots))
    }

    /// Per-reason counters of one interface (by ifindex), summed over CPUs.
    pub(crate) fn interface(&self, ifindex: u32) -> Result<Counters, Error> {
        let per_cpu = self
            .per_interface
            .get(&names::interface_slot(ifindex), 0)
            .map_err(read_err(names::INTERFACE_COUNTERS))?;
        Ok(Counters::from_slots(per_cpu.iter().flat_map(|cpu| {
            Reason::ALL.iter().map(|&r| (r, cpu.by_reason[r as usize]))
        })))
    }
}
