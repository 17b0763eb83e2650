//! Packet capture, user side: writes the filter, turns the program's capture bit on, reads the
//! per-CPU perf buffers, and turns the bit off again when the [`CaptureReader`] goes away
//! (dropped, errored, or stopped), so a capture can never be left running by accident.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::maps::{
    perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
    Array, MapData, PerCpuArray, PerCpuValues,
};
use groundzero_common::{
    capture::{
        halves_v4, halves_v6, mask_halves, CaptureBucket, CaptureCtl, CaptureMeta, CAPTURE_BUCKET,
        CAPTURE_CTL, CAPTURE_EVENTS, CAPTURE_LOST, MAX_SNAPLEN, VERDICT_DROP, VERDICT_PASS,
    },
    maps::Config,
    Reason,
};
use ipnet::IpNet;

use super::{
    config::{update_shared, ConfigMap, SharedConfig},
    object::Object,
};
use crate::error::Error;

/// Pages of each CPU's perf buffer (a power of two): 256 KiB with 4 KiB pages, room for a
/// few hundred full-size frames between two reads.
const BUFFER_PAGES: usize = 64;

/// What to capture. Build one with [`CaptureFilter::default`] (drops, every reason, any
/// interface and source, 256-byte snap length, 1000 packets per second) and change fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Capture packets the program drops.
    pub drops: bool,
    /// Capture packets the program passes.
    pub passes: bool,
    /// Only these reasons; empty = every reason.
    pub reasons: Vec<Reason>,
    /// Only sources inside this prefix.
    pub source: Option<IpNet>,
    /// Only packets arriving on this interface; 0 = any.
    pub ifindex: u32,
    /// Bytes of each packet to keep (1..=65535).
    pub snaplen: u32,
    /// Most packets per second, over all CPUs (≥ 1).
    pub rate_pps: u32,
}

impl Default for CaptureFilter {
    fn default() -> Self {
        Self {
            drops: true,
            passes: false,
            reasons: Vec::new(),
            source: None,
            ifindex: 0,
            snaplen: 256,
            rate_pps: 1000,
        }
    }
}

impl CaptureFilter {
    /// The kernel's form of the filter, the rate split over `cpus` CPUs.
    pub(crate) fn ctl(&self, cpus: u32) -> CaptureCtl {
        let cpus = u64::from(cpus.max(1));
        let rate = u64::from(self.rate_pps.max(1));
        // Each CPU gets its share of the rate; a CPU can save up a tenth of a second of it.
        let cost_ns = 1_000_000_000 * cpus / rate;
        let burst = (rate / cpus / 10).max(1);
        let (src_family, src, mask) = match self.source {
            None => (0, [0, 0], [0, 0]),
            Some(IpNet::V4(n)) => {
                let mask = mask_halves(u32::from(n.prefix_len()));
                let a = halves_v4(n.network().octets());
                (4, [a[0] & mask[0], a[1] & mask[1]], mask)
            }
            Some(IpNet::V6(n)) => {
                let mask = mask_halves(u32::from(n.prefix_len()));
                let a = halves_v6(n.network().octets());
                (6, [a[0] & mask[0], a[1] & mask[1]], mask)
            }
        };
        let reasons = if self.reasons.is_empty() {
            u32::MAX
        } else {
            self.reasons.iter().fold(0, |m, r| m | 1 << (*r as u32))
        };
        CaptureCtl {
            verdicts: if self.drops { VERDICT_DROP } else { 0 }
                | if self.passes { VERDICT_PASS } else { 0 },
            reasons,
            ifindex: self.ifindex,
            snaplen: self.snaplen.clamp(1, MAX_SNAPLEN),
            src_family,
            _pad: 0,
            src,
            mask,
            cost_ns,
            budget_max_ns: cost_ns * burst,
        }
    }
}

/// The capture maps, taken out of the object on the first capture.
pub(crate) struct CaptureMaps {
    ctl: Array<MapData, CaptureCtl>,
    bucket: PerCpuArray<MapData, CaptureBucket>,
    lost: Arc<PerCpuArray<MapData, u64>>,
    events: PerfEventArray<MapData>,
    running: Arc<AtomicBool>,
}

impl CaptureMaps {
    /// Takes the four capture maps out of the loaded object.
    pub(crate) fn take(object: &mut Object) -> Result<Self, Error> {
        let read = |map: &'static str| move |source| Error::MapRead { map, source };
        Ok(Self {
            ctl: Array::try_from(object.take_map(CAPTURE_CTL)?).map_err(read(CAPTURE_CTL))?,
            bucket: PerCpuArray::try_from(object.take_map(CAPTURE_BUCKET)?)
                .map_err(read(CAPTURE_BUCKET))?,
            lost: Arc::new(
                PerCpuArray::try_from(object.take_map(CAPTURE_LOST)?)
                    .map_err(read(CAPTURE_LOST))?,
            ),
            events: PerfEventArray::try_from(object.take_map(CAPTURE_EVENTS)?)
                .map_err(read(CAPTURE_EVENTS))?,
            running: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Writes the filter, empties the buckets and the lost counter, opens one perf buffer per
    /// online CPU, and only then sets the capture bit.
    pub(crate) fn start(
        &mut self,
        config: &mut ConfigMap,
        filter: &CaptureFilter,
    ) -> Result<CaptureReader, Error> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(Error::CaptureRunning);
        }
        // From here on, a failure must give the slot back: the reader's Drop does that, so
        // build the reader first and fill it.
        let mut reader = CaptureReader {
            buffers: Vec::new(),
            lost: Arc::clone(&self.lost),
            config: config.shared(),
            running: Arc::clone(&self.running),
            clock_offset_ns: realtime_minus_monotonic_ns(),
            buffer_lost: 0,
            rate_lost_at_start: 0,
            reported_lost: 0,
            stopped: false,
        };
        let cpus =
            aya::util::online_cpus().map_err(|(what, e)| Error::Capture(format!("{what}: {e}")))?;
        let possible =
            aya::util::nr_cpus().map_err(|(what, e)| Error::Capture(format!("{what}: {e}")))?;
        let write = |map: &'static str| move |source| Error::MapWrite { map, source };
        self.ctl
            .set(0, filter.ctl(cpus.len() as u32), 0)
            .map_err(write(CAPTURE_CTL))?;
        let zero_buckets = PerCpuValues::try_from(vec![CaptureBucket::default(); possible])
            .map_err(|e| Error::Capture(format!("{CAPTURE_BUCKET}: {e}")))?;
        self.bucket
            .set(0, zero_buckets, 0)
            .map_err(write(CAPTURE_BUCKET))?;
        reader.rate_lost_at_start = reader.rate_lost()?;
        for cpu in cpus {
            let buffer = self
                .events
                .open(cpu, Some(BUFFER_PAGES))
                .map_err(|source| Error::CaptureBuffer { cpu, source })?;
            reader.buffers.push(buffer);
        }
        update_shared(&reader.config, |c| c.flags |= Config::CAPTURE)?;
        Ok(reader)
    }
}

/// Clears a capture bit a previous process left set (it died mid-capture): nothing reads
/// those records now.
pub(crate) fn clear_stale(config: &mut ConfigMap) -> Result<(), Error> {
    if Config::capture_in(config.get()?.flags) {
        log::warn!("a capture bit was left set (a capture ended without cleanup); clearing it");
        config.update(|c| c.flags &= !Config::CAPTURE)?;
    }
    Ok(())
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// What the program said about it.
    pub meta: CaptureMeta,
    /// Its first [`CaptureMeta::captured_len`] bytes.
    pub data: Vec<u8>,
    /// Wall-clock time of the verdict, in nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// Packets the filter admitted but that were lost since the previous record (over the
    /// rate, or a full buffer).
    pub lost_before: u64,
}

impl CaptureRecord {
    /// The reason the program counted the packet under, if it is one this build knows.
    pub fn reason(&self) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| *r as u32 == self.meta.reason)
    }
}

/// Packets a capture admitted but did not deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureLost {
    /// Skipped in the kernel: over the capture rate.
    pub rate_limited: u64,
    /// The perf buffer was full (user space read too slowly).
    pub buffer_full: u64,
}

/// A running capture. Dropping it stops the capture.
pub struct CaptureReader {
    buffers: Vec<PerfEventArrayBuffer<MapData>>,
    lost: Arc<PerCpuArray<MapData, u64>>,
    config: SharedConfig,
    running: Arc<AtomicBool>,
    clock_offset_ns: i128,
    buffer_lost: u64,
    rate_lost_at_start: u64,
    /// Losses already attributed to a record.
    reported_lost: u64,
    /// This reader has released the capture. Its own flag, not the shared `running`: once
    /// released, a new capture may already have set `running` again, and this reader's drop
    /// must not clear that capture's bit.
    stopped: bool,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("buffers", &self.buffers.len())
            .finish_non_exhaustive()
    }
}

impl CaptureReader {
    /// Waits up to `timeout` for records, then returns every record waiting (maybe none).
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<CaptureRecord>, Error> {
        let mut fds: Vec<libc::pollfd> = self
            .buffers
            .iter()
            .map(|b| libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Capture(format!("poll: {e}")));
            }
        }
        let mut out = Vec::new();
        let mut buffer_lost = 0;
        let offset = self.clock_offset_ns;
        for buffer in &mut self.buffers {
            buffer.for_each(|event| match event {
                PerfEvent::Sample { head, tail } => {
                    if let Some(r) = record(head, tail, offset) {
                        out.push(r);
                    }
                }
                PerfEvent::Lost { count } => buffer_lost += count,
            });
        }
        self.buffer_lost += buffer_lost;
        // Losses go to the first record after them (pcapng's per-packet drop count).
        let lost = self.lost()?;
        let total = lost.rate_limited + lost.buffer_full;
        if let Some(first) = out.first_mut() {
            first.lost_before = total - self.reported_lost.min(total);
            self.reported_lost = total;
        }
        Ok(out)
    }

    /// Losses so far in this capture.
    pub fn lost(&self) -> Result<CaptureLost, Error> {
        Ok(CaptureLost {
            rate_limited: self.rate_lost()?.saturating_sub(self.rate_lost_at_start),
            buffer_full: self.buffer_lost,
        })
    }

    /// Losses not yet attributed to a record (they happened after the last one).
    pub fn unreported_lost(&self) -> Result<u64, Error> {
        let lost = self.lost()?;
        Ok((lost.rate_limited + lost.buffer_full).saturating_sub(self.reported_lost))
    }

    fn rate_lost(&self) -> Result<u64, Error> {
        let values = self.lost.get(&0, 0).map_err(|source| Error::MapRead {
            map: CAPTURE_LOST,
            source,
        })?;
        Ok(values.iter().sum())
    }

    /// Stops the capture now (the same as dropping it, with the error reported).
    pub fn stop(mut self) -> Result<CaptureLost, Error> {
        let lost = self.lost();
        let cleared = self.clear();
        self.stopped = true;
        self.running.store(false, Ordering::SeqCst);
        self.buffers.clear();
        cleared?;
        lost
    }

    fn clear(&mut self) -> Result<(), Error> {
        update_shared(&self.config, |c| c.flags &= !Config::CAPTURE)
    }
}

impl Drop for CaptureReader {
    fn drop(&mut self) {
        if self.stopped {
            return; // stopped already
        }
        if let Err(e) = self.clear() {
            log::error!(
                "capture: clearing the capture bit failed: {}",
                crate::error::error_chain(&e)
            );
        }
        self.running.store(false, Ordering::SeqCst);
    }
}

/// A perf sample: the metadata, then the packet bytes (plus the kernel's alignment padding).
fn record(head: &[u8], tail: &[u8], clock_offset_ns: i128) -> Option<CaptureRecord> {
    let mut bytes = Vec::with_capacity(head.len() + tail.len());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(tail);
    let meta_len = std::mem::size_of::<CaptureMeta>();
    if bytes.len() < meta_len {
        return None;
    }
    // SAFETY: at least `meta_len` bytes; CaptureMeta is plain integers (any bit pattern valid).
    let meta: CaptureMeta = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let end = (meta_len + meta.captured_len as usize).min(bytes.len());
    let unix_ns = (i128::from(meta.ktime_ns) + clock_offset_ns).max(0) as u64;
    Some(CaptureRecord {
        meta,
        data: bytes[meta_len..end].to_vec(),
        unix_ns,
        lost_before: 0,
    })
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, measured once: `bpf_ktime_get_ns` is CLOCK_MONOTONIC.
/// The two reads bracket nothing else, so the error is the ~100 ns between them.
fn realtime_minus_monotonic_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec; both clocks always exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let mono = read(libc::CLOCK_MONOTONIC);
    let real = read(libc::CLOCK_REALTIME);
    real - mono
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_split_over_cpus_and_the_filter_is_masked() {
        let f = CaptureFilter {
            source: Some("198.18.0.77/24".parse().unwrap()),
            rate_pps: 100,
            reasons: vec![Reason::BlockedCidr],
            ..Default::default()
        };
        let ctl = f.ctl(2);
        assert_eq!(ctl.cost_ns, 20_000_000); // 50 per CPU per second
        assert_eq!(ctl.budget_max_ns, 5 * 20_000_000);
        assert_eq!(
            ctl.src[0],
            u64::from(u32::from_be_bytes([198, 18, 0, 0])) << 32
        );
        assert_eq!(ctl.reasons, 1 << 5);
        assert_eq!(ctl.verdicts, VERDICT_DROP);
        assert!(ctl.admits_source(4, halves_v4([198, 18, 0, 9])));
        assert!(!ctl.admits_source(4, halves_v4([198, 19, 0, 9])));
    }

    #[test]
    fn a_record_is_cut_at_its_captured_length() {
        let meta = CaptureMeta {
            captured_len: 3,
            ktime_ns: 10,
            ..Default::default()
        };
        let mut raw = vec![0u8; std::mem::size_of::<CaptureMeta>()];
        // SAFETY: raw has room for one CaptureMeta.
        unsafe { std::ptr::write_unaligned(raw.as_mut_ptr().cast(), meta) };
        raw.extend_from_slice(&[1, 2, 3, 0, 0]); // 2 bytes of padding
        let (head, tail) = raw.split_at(20);
        let r = record(head, tail, 5).unwrap();
        assert_eq!(r.data, vec![1, 2, 3]);
        assert_eq!(r.unix_ns, 15);
        assert!(record(&raw[..10], &[], 0).is_none());
    }
}
