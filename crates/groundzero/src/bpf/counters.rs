//! The per-reason counter maps: the whole program's and each interface's, per CPU.

use aya::maps::{MapData, PerCpuArray};
use groundzero_common::{
    maps::{self as names, Counter, InterfaceCounters},
    Reason,
};

use super::object::Object;
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
        let mut slots = Vec::new();
        for slot in 0..names::INTERFACE_SLOTS {
            let per_cpu = self
                .per_interface
                .get(&slot, 0)
                .map_err(read_err(names::INTERFACE_COUNTERS))?;
            slots.extend(per_cpu.iter().flat_map(|cpu| {
                Reason::ALL
                    .iter()
                    .map(|&r| (r, cpu.by_reason[r as usize]))
                    .filter(|(_, c)| c.packets != 0)
            }));
        }
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
