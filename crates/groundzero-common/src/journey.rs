//! Journey tracing: what the XDP program and the observer programs report about *sampled*
//! packets, and how the two sides of the XDP/skb boundary are tied together.
//!
//! A sampled packet that passes XDP carries [`JourneyMeta`] in its XDP metadata area (in front
//! of the Ethernet header). The kernel keeps that area when it builds the skb, so the first
//! observer (`netif_receive_skb`) reads the id from the skb itself: no guessing by addresses or
//! ports. Every later observer reads the same tag from the skb it is handed.

/// Map names (not pinned: a journey does not outlive the daemon that reads it).
pub const JOURNEY_EVENTS: &str = "journey_events";
pub const JOURNEY_OFFSETS: &str = "journey_offsets";
pub const JOURNEY_TICKS: &str = "journey_ticks";
pub const JOURNEY_UDP_READS: &str = "journey_udp_reads";
pub const JOURNEY_UDP_PENDING: &str = "journey_udp_pending";
pub const JOURNEY_FILTERED: &str = "journey_filtered";
pub const JOURNEY_SKBS: &str = "journey_skbs";

/// Per CPU, the packets the sample filter admits, as counted by the XDP program while tracing
/// is on: the population that sampled journeys are drawn from, so rates after XDP are scaled
/// from it and never from all traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilteredCounts {
    pub seen: u64,
    pub passed: u64,
    pub dropped: u64,
}
/// Ring buffer size for journey events (bytes, a power of two and a multiple of the page size).
pub const JOURNEY_RING_BYTES: u32 = 1 << 20;

/// Marks metadata written by groundzero, so stale bytes in a recycled buffer's headroom are not
/// mistaken for a sample (the observer also checks that the skb's metadata length is ours).
/// Each tracer mixes a random salt into it ([`JourneyOffsets::magic`]): observers run for every
/// skb on the host, and another loaded copy of the program (a test, an application's fallback)
/// numbers its samples the same way, so only our own salt tells our tags from theirs.
pub const JOURNEY_MAGIC: u32 = 0x475a_4a31; // "GZJ1"

/// What the XDP program puts in front of a sampled packet that it passes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneyMeta {
    pub magic: u32,
    pub id: u32,
}

/// Where a packet was seen. The numeric value is what the kernel reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The XDP program: `ts_ns` when it started deciding, `end_ns` when it returned.
    Xdp = 0,
    /// `netif_receive_skb`: an skb exists, the stack starts.
    Stack = 1,
    /// `ip_rcv_core` / `ip6_rcv_core`: IP header checks.
    Ip = 2,
    /// `ip_protocol_deliver_rcu` / `ip6_protocol_deliver_rcu`: handed to UDP, TCP, ICMP...
    Transport = 3,
    /// `sk_data_ready`: queued on a socket (the tail of its receive queue), the reader woken.
    Socket = 4,
    /// The application read it: `skb_copy_datagram_iovec` (TCP, non-linear UDP), or for UDP
    /// the `recvmsg` that reached this datagram in its socket's FIFO (`sock_recv_length`).
    App = 5,
    /// `kfree_skb`: the kernel dropped it; `extra` is the `skb_drop_reason`.
    KernelDrop = 6,
    /// `consume_skb`: freed after normal use without an application read (a SYN, an echo...).
    Consumed = 7,
    /// `napi_gro_receive_entry`: the driver built an skb for the passed frame and hands it to
    /// GRO (native XDP on drivers that use GRO, veth among them).
    Gro = 8,
    /// Merged: its data was appended to another skb, and this one freed (`kfree_skb_partial`
    /// after TCP coalescing or IP fragment reassembly, `napi_skb_free_stolen_head` and
    /// `__napi_kfree_skb` after a GRO merge). `extra` says which ([`MERGED_BY`]).
    Merged = 9,
}

/// The functions behind [`Stage::Merged`], by the event's `extra`.
pub const MERGED_BY: [&str; 3] = [
    "kfree_skb_partial",
    "napi_skb_free_stolen_head",
    "__napi_kfree_skb",
];

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Xdp,
        Stage::Stack,
        Stage::Ip,
        Stage::Transport,
        Stage::Socket,
        Stage::App,
        Stage::KernelDrop,
        Stage::Consumed,
        Stage::Gro,
        Stage::Merged,
    ];

    pub const fn from_u8(v: u8) -> Option<Stage> {
        if (v as usize) < Stage::ALL.len() {
            Some(Stage::ALL[v as usize])
        } else {
            None
        }
    }

    /// Stable lowercase name used in JSON, metrics and the CLI.
    pub const fn label(self) -> &'static str {
        match self {
            Stage::Xdp => "xdp",
            Stage::Stack => "stack",
            Stage::Ip => "ip",
            Stage::Transport => "transport",
            Stage::Socket => "socket",
            Stage::App => "app",
            Stage::KernelDrop => "kernel_drop",
            Stage::Consumed => "consumed",
            Stage::Gro => "gro",
            Stage::Merged => "merged",
        }
    }
}

/// One observation of one sampled packet. The XDP event also carries the flow; the others only
/// the id, the stage and the time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneyEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at this stage; XDP: at program entry, before
    /// parsing.
    pub ts_ns: u64,
    /// XDP: the last moment before the event is written to the ring (after the verdict, the
    /// counters and `bpf_xdp_adjust_meta`). KernelDrop and Consumed: the kernel address that freed
    /// the skb (the tracepoint's `location`), which user space resolves to a function name.
    /// Otherwise 0.
    pub aux: u64,
    pub id: u32,
    /// XDP: ingress ifindex. KernelDrop: the `skb_drop_reason`. Merged: the freeing function's
    /// index in [`MERGED_BY`]. Otherwise 0.
    pub extra: u32,
    pub stage: u8,
    /// XDP: 4 or 6.
    pub family: u8,
    /// XDP: IP protocol / IPv6 next header.
    pub protocol: u8,
    /// XDP: the [`crate::Reason`] of the verdict.
    pub reason: u8,
    /// XDP: ports in host order (0 when not TCP/UDP).
    pub src_port: u16,
    pub dst_port: u16,
    /// XDP: addresses in network order; IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The CPU the event was observed on.
    pub cpu: u32,
    pub _pad: u32,
}

/// Byte offsets into kernel structures, read from the running kernel's BTF by user space when
/// tracing starts (nothing here is compiled against one kernel's headers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneyOffsets {
    /// `sk_buff.head` (a pointer).
    pub skb_head: u32,
    /// `sk_buff.end` (an offset from head on 64-bit kernels, a `u32`).
    pub skb_end: u32,
    /// `sk_buff.mac_header` (a `u16` offset from head).
    pub skb_mac_header: u32,
    /// `skb_shared_info.meta_len` (a `u8`; the shared info lives at `head + end`).
    pub shinfo_meta_len: u32,
    /// `sock.sk_receive_queue` (a `sk_buff_head`).
    pub sock_receive_queue: u32,
    /// `sock.sk_protocol` (a `u16`).
    pub sock_protocol: u32,
    /// `sock.__sk_common.skc_family` (a `u16`): only an IP socket's queueing may claim a journey.
    pub sock_family: u32,
    /// `udp_sock.reader_queue` (a `sk_buff_head`; UDP readers dequeue from here).
    pub udp_reader_queue: u32,
    /// `sk_buff_head.prev` (the tail) and `sk_buff_head.qlen` (a `u32`).
    pub list_prev: u32,
    pub list_qlen: u32,
    /// The tag's magic for this tracer: [`JOURNEY_MAGIC`] with a random salt; 0 = do not tag.
    pub magic: u32,
}

/// Which packets are sampled. Zero fields match anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// IP protocol (6 TCP, 17 UDP, ...), 0 = any.
    pub protocol: u8,
    /// 4 or 6 to filter on a source prefix, 0 = any source.
    pub family: u8,
    /// Source prefix length in bits (with `family`).
    pub prefix_len: u8,
    pub _pad: u8,
    /// Source or destination port, 0 = any.
    pub port: u16,
    pub _pad2: u16,
    /// Source prefix, network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

impl FlowFilter {
    /// True when a packet with these fields is in the filter.
    #[inline(always)]
    pub fn matches(&self, protocol: u8, src: &[u8], src_port: u16, dst_port: u16) -> bool {
        if self.protocol != 0 && self.protocol != protocol {
            return false;
        }
        if self.port != 0 && self.port != src_port && self.port != dst_port {
            return false;
        }
        if self.family != 0 {
            let want_len = if self.family == 4 { 4 } else { 16 };
            if src.len() != want_len {
                return false;
            }
            return prefix_matches(&self.addr, src, self.prefix_len);
        }
        true
    }
}

/// Does `addr` start with the first `bits` bits of `prefix`? Bounded loop, verifier-friendly.
#[inline(always)]
fn prefix_matches(prefix: &[u8; 16], addr: &[u8], bits: u8) -> bool {
    let mut i = 0usize;
    while i < 16 {
        let bit = (i * 8) as u32;
        if bit >= bits as u32 || i >= addr.len() {
            return true;
        }
        let left = bits as u32 - bit;
        let mask: u8 = if left >= 8 {
            0xff
        } else {
            0xffu8 << (8 - left)
        };
        if (prefix[i] ^ addr[i]) & mask != 0 {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matches_protocol_port_and_prefix() {
        let any = FlowFilter::default();
        assert!(any.matches(17, &[1, 2, 3, 4], 1, 2));
        let udp_7000 = FlowFilter {
            protocol: 17,
            port: 7000,
            ..Default::default()
        };
        assert!(udp_7000.matches(17, &[1, 2, 3, 4], 40000, 7000));
        assert!(udp_7000.matches(17, &[1, 2, 3, 4], 7000, 40000));
        assert!(!udp_7000.matches(6, &[1, 2, 3, 4], 40000, 7000));
        assert!(!udp_7000.matches(17, &[1, 2, 3, 4], 40000, 7001));
        let mut net = FlowFilter {
            family: 4,
            prefix_len: 20,
            ..Default::default()
        };
        net.addr[..4].copy_from_slice(&[198, 18, 16, 0]);
        assert!(net.matches(6, &[198, 18, 31, 255], 0, 0));
        assert!(!net.matches(6, &[198, 18, 32, 0], 0, 0));
        assert!(!net.matches(6, &[0u8; 16], 0, 0), "family must match");
    }
}
