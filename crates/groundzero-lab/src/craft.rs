//! Building test frames: what the BPF_PROG_TEST_RUN tests, the differential test and the
//! benchmarks feed the XDP program. Headers and checksums come from `etherparse`; only the
//! deliberate damage (VLAN stacking beyond what etherparse builds, truncation) is done here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpHeaders, Ipv4Header, PacketBuilder};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// The transport part of a crafted packet.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Udp { src_port: u16, dst_port: u16 },
    TcpSyn { src_port: u16, dst_port: u16 },
    IcmpEcho { id: u16, seq: u16 },
}

impl L4 {
    pub const UDP: L4 = L4::Udp {
        src_port: 40000,
        dst_port: 9000,
    };
}

/// An Ethernet frame carrying IPv4 or IPv6 (chosen by the address family of `src`/`dst`).
pub fn ip_packet(src: IpAddr, dst: IpAddr, l4: L4, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(
            Ipv4Header::new(0, 64, etherparse::IpNumber(0), s.octets(), d.octets())
                .expect("no payload yet"),
            l4,
            payload,
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, l4, payload),
        _ => panic!("source and destination must be of one family: {src} {dst}"),
    }
}

/// UDP over IPv4 with `src` as source.
pub fn udp4(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    ip_packet(
        src.into(),
        Ipv4Addr::new(198, 18, 0, 1).into(),
        L4::UDP,
        payload,
    )
}

/// UDP over IPv6 with `src` as source.
pub fn udp6(src: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    ip_packet(
        src.into(),
        "2001:2::1".parse::<Ipv6Addr>().unwrap().into(),
        L4::UDP,
        payload,
    )
}

/// UDP over IPv4 with IP options (`options` is padded by the caller to a multiple of 4 bytes).
pub fn udp4_with_options(src: Ipv4Addr, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut header = Ipv4Header::new(
        0,
        64,
        etherparse::IpNumber(0),
        src.octets(),
        [198, 18, 0, 1],
    )
    .expect("no payload yet");
    header.options = etherparse::Ipv4Options::try_from(options)
        .expect("options are a multiple of 4 bytes, at most 40");
    ipv4_packet(header, L4::UDP, payload)
}

/// A non-first IPv4 fragment: no transport header, just bytes at `offset_units` × 8.
pub fn ipv4_fragment(
    src: Ipv4Addr,
    offset_units: u16,
    more_fragments: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut header = Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::ip_number::UDP,
        src.octets(),
        [198, 18, 0, 1],
    )
    .expect("payload fits");
    header.more_fragments = more_fragments;
    header.fragment_offset = etherparse::IpFragOffset::try_new(offset_units).expect("13 bits");
    header.header_checksum = header.calc_header_checksum();
    let mut frame = ethernet(0x0800);
    header.write(&mut frame).expect("writing to a Vec");
    frame.extend_from_slice(payload);
    frame
}

/// An ARP request (non-IP traffic).
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = ethernet(0x0806);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// Inserts VLAN tags after the MAC addresses, outermost first: `[(TPID_8021AD, 100), (TPID_8021Q, 200)]`.
pub fn with_vlans(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn ipv4_packet(header: Ipv4Header, l4: L4, payload: &[u8]) -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ip(IpHeaders::Ipv4(header, Default::default()));
    let mut out = Vec::new();
    match l4 {
        L4::Udp { src_port, dst_port } => builder.udp(src_port, dst_port).write(&mut out, payload),
        L4::TcpSyn { src_port, dst_port } => builder
            .tcp(src_port, dst_port, 1, 64240)
            .syn()
            .write(&mut out, payload),
        L4::IcmpEcho { id, seq } => builder
            .icmpv4_echo_request(id, seq)
            .write(&mut out, payload),
    }
    .expect("writing to a Vec");
    out
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src.octets(), dst.octets(), 64);
    let mut out = Vec::new();
    match l4 {
        L4::Udp { src_port, dst_port } => builder.udp(src_port, dst_port).write(&mut out, payload),
        L4::TcpSyn { src_port, dst_port } => builder
            .tcp(src_port, dst_port, 1, 64240)
            .syn()
            .write(&mut out, payload),
        L4::IcmpEcho { id, seq } => builder
            .icmpv6_echo_request(id, seq)
            .write(&mut out, payload),
    }
    .expect("writing to a Vec");
    out
}

/// An Ethernet frame with any ethertype (an 802.3 length too) followed by `payload` as is: for
/// non-IP traffic and for headers etherparse refuses to build.
pub fn raw_frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(ethertype);
    frame.extend_from_slice(payload);
    frame
}

/// Like [`with_vlans`], but each tag is `(TPID, TCI)` with the whole tag control information
/// kept (priority and drop-eligible bits too), and any TPID: the parser must look at neither.
pub fn with_vlan_tcis(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// An IPv4 header, its options and what follows, with every field the parser checks under the
/// caller's control: any version, any IHL, any total length, options whose length need not agree
/// with the IHL. etherparse (rightly) refuses to build most of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIpv4 {
    /// Only the low 4 bits are used.
    pub version: u8,
    /// Header length in 32-bit words; only the low 4 bits are used.
    pub ihl: u8,
    /// `None`: the real length of header, options and payload.
    pub total_len: Option<u16>,
    /// Flags (3 bits) and fragment offset (13 bits), as on the wire.
    pub flags_fragment: u16,
    pub protocol: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Written right after the fixed 20 bytes, whatever `ihl` says.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl RawIpv4 {
    /// A well-formed header (version 4, IHL 5, UDP, no options, no payload) from `src`.
    pub fn new(src: Ipv4Addr) -> Self {
        Self {
            version: 4,
            ihl: 5,
            total_len: None,
            flags_fragment: 0,
            protocol: 17,
            src: src.octets(),
            dst: [198, 18, 0, 1],
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// The IPv4 bytes: header, options, payload. The checksum covers the fixed header and the
    /// options, so that a well-formed header is also a valid one.
    pub fn bytes(&self) -> Vec<u8> {
        let real_len = 20 + self.options.len() + self.payload.len();
        let total_len = self.total_len.unwrap_or(real_len as u16);
        let mut out = Vec::with_capacity(real_len);
        out.push(((self.version & 0x0f) << 4) | (self.ihl & 0x0f));
        out.push(0); // DSCP, ECN
        out.extend_from_slice(&total_len.to_be_bytes());
        out.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
        out.extend_from_slice(&self.flags_fragment.to_be_bytes());
        out.push(64); // TTL
        out.push(self.protocol);
        out.extend_from_slice(&[0, 0]); // checksum, below
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.options);
        let checksum = internet_checksum(&out);
        out[10..12].copy_from_slice(&checksum.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// An Ethernet frame (ethertype IPv4) carrying [`RawIpv4::bytes`].
    pub fn frame(&self) -> Vec<u8> {
        raw_frame(0x0800, &self.bytes())
    }
}

/// An IPv6 header and what follows, with the version nibble under the caller's control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIpv6 {
    /// Only the low 4 bits are used.
    pub version: u8,
    pub next_header: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// `None`: the real payload length.
    pub payload_len: Option<u16>,
    pub payload: Vec<u8>,
}

impl RawIpv6 {
    /// A well-formed header (version 6, UDP, no payload) from `src`.
    pub fn new(src: Ipv6Addr) -> Self {
        Self {
            version: 6,
            next_header: 17,
            src: src.octets(),
            dst: "2001:2::1".parse::<Ipv6Addr>().unwrap().octets(),
            payload_len: None,
            payload: Vec::new(),
        }
    }

    /// The IPv6 bytes: fixed header, then payload.
    pub fn bytes(&self) -> Vec<u8> {
        let payload_len = self.payload_len.unwrap_or(self.payload.len() as u16);
        let mut out = Vec::with_capacity(40 + self.payload.len());
        out.extend_from_slice(&[(self.version & 0x0f) << 4, 0, 0, 0]);
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(self.next_header);
        out.push(64); // hop limit
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.payload);
        out
    }

    /// An Ethernet frame (ethertype IPv6) carrying [`RawIpv6::bytes`].
    pub fn frame(&self) -> Vec<u8> {
        raw_frame(0x86dd, &self.bytes())
    }
}

/// RFC 1071 ones' complement sum; an odd trailing byte is padded with zero.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
