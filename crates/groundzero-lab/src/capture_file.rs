//! Reading capture files (pcap and pcapng) as the Ethernet frames the XDP program sees.
//!
//! `groundzero replay` runs every packet of a capture through the verdict; captures come from
//! many link types (`tcpdump -i any` writes Linux cooked headers, tunnels write raw IP), but the
//! program only ever sees Ethernet. [`to_ethernet`] rebuilds that frame: the network-layer bytes
//! are kept as captured, so the parser and the lists see exactly the captured packet.
//!
//! The file formats are read with the `pcap-file` crate; for classic pcap its raw records are
//! used, because its checked records refuse a length on the wire above the snap length, which is
//! what every capture taken with `-s` legitimately holds.

use std::{
    borrow::Cow,
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
    DataLink, PcapError,
};

/// The first four bytes of a pcapng file (its section header block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Linux cooked capture v1 header length, and where its protocol (an EtherType) sits.
const SLL_LEN: usize = 16;
const SLL_PROTOCOL_AT: usize = 14;
/// Linux cooked capture v2 header length; its protocol is the first field.
const SLL2_LEN: usize = 20;

/// Why a capture file could not be read. Every per-packet error names the packet's 0-based index.
#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng file")]
    Header { path: PathBuf, source: PcapError },
    #[error("packet {index}: the file is truncated or corrupt")]
    Corrupt { index: usize, source: PcapError },
    #[error(
        "packet {index}: link type {name} ({number}) is not supported \
         (Ethernet, Linux cooked SLL/SLL2 and raw IP are)"
    )]
    UnsupportedLinkType {
        index: usize,
        number: u32,
        name: String,
    },
    #[error("packet {index}: {len} bytes is shorter than its {link} header ({need} bytes)")]
    ShortLinkHeader {
        index: usize,
        link: &'static str,
        len: usize,
        need: usize,
    },
}

/// One packet of a capture, as an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// 0-based position among the file's packets.
    pub index: usize,
    /// The frame the XDP program would see (converted from the capture's link type).
    pub ethernet: Vec<u8>,
    /// The capture cut the packet short (its snap length): the verdict sees only these bytes.
    pub truncated: bool,
}

/// The link types a capture may have that [`to_ethernet`] converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Ethernet (with or without VLAN tags): taken as it is.
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any` since libpcap 1.10).
    LinuxSll2,
    /// Raw IP (the version nibble says which), or raw IPv4 / IPv6 only.
    RawIp,
}

impl Link {
    /// The converter for `link`, or `None` when it is not one groundzero can rebuild Ethernet for.
    pub fn of(link: DataLink) -> Option<Link> {
        match link {
            DataLink::ETHERNET => Some(Link::Ethernet),
            DataLink::LINUX_SLL => Some(Link::LinuxSll),
            DataLink::LINUX_SLL2 => Some(Link::LinuxSll2),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(Link::RawIp),
            // Some systems write DLT_RAW's platform value (12 or 14) instead of LINKTYPE_RAW.
            DataLink::Unknown(12 | 14) => Some(Link::RawIp),
            _ => None,
        }
    }
}

/// `frame` (captured with `link`) as an Ethernet frame. Addresses the capture does not hold are
/// zero; the EtherType comes from the cooked header's protocol or, for raw IP, from the version
/// nibble (neither 4 nor 6 gives EtherType 0, which the program counts as not IP).
pub fn to_ethernet(
    link: Link,
    frame: &[u8],
    index: usize,
) -> Result<Cow<'_, [u8]>, CaptureFileError> {
    let short = |name, need| CaptureFileError::ShortLinkHeader {
        index,
        link: name,
        len: frame.len(),
        need,
    };
    match link {
        Link::Ethernet => Ok(Cow::Borrowed(frame)),
        Link::LinuxSll => {
            if frame.len() < SLL_LEN {
                return Err(short("Linux cooked (SLL)", SLL_LEN));
            }
            let protocol = u16::from_be_bytes([frame[SLL_PROTOCOL_AT], frame[SLL_PROTOCOL_AT + 1]]);
            // The link-layer source address, when it is a MAC (length 6 at offset 6).
            let src = (frame[4..6] == [0, 6]).then(|| &frame[6..12]);
            Ok(Cow::Owned(ethernet(src, protocol, &frame[SLL_LEN..])))
        }
        Link::LinuxSll2 => {
            if frame.len() < SLL2_LEN {
                return Err(short("Linux cooked (SLL2)", SLL2_LEN));
            }
            let protocol = u16::from_be_bytes([frame[0], frame[1]]);
            let src = (frame[11] == 6).then(|| &frame[12..18]);
            Ok(Cow::Owned(ethernet(src, protocol, &frame[SLL2_LEN..])))
        }
        Link::RawIp => {
            let ethertype = match frame.first().map(|b| b >> 4) {
                Some(4) => ETHERTYPE_IPV4,
                Some(6) => ETHERTYPE_IPV6,
                _ => 0,
            };
            Ok(Cow::Owned(ethernet(None, ethertype, frame)))
        }
    }
}

fn ethernet(src: Option<&[u8]>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(src.unwrap_or(&[0; 6]));
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads every packet of the pcap or pcapng file at `path` (told apart by its first bytes), as
/// Ethernet frames, in file order. Stops at the first bad packet: a verdict for the packets
/// after a corrupt record would be a guess.
pub fn read_frames(path: &Path) -> Result<Vec<Frame>, CaptureFileError> {
    let open = |source| CaptureFileError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    let mut magic = [0u8; 4];
    let is_pcapng = match file.read_exact(&mut magic) {
        Ok(()) => magic == PCAPNG_MAGIC,
        // Too short for either format: let the pcap reader say so.
        Err(_) => false,
    };
    file.seek(SeekFrom::Start(0)).map_err(open)?;
    let reader = BufReader::new(file);
    if is_pcapng {
        read_pcapng(reader, path)
    } else {
        read_pcap(reader, path)
    }
}

fn link_of(link: DataLink, index: usize) -> Result<Link, CaptureFileError> {
    Link::of(link).ok_or_else(|| CaptureFileError::UnsupportedLinkType {
        index,
        number: u32::from(link),
        name: format!("{link:?}"),
    })
}

fn read_pcap(reader: impl Read, path: &Path) -> Result<Vec<Frame>, CaptureFileError> {
    let mut pcap = PcapReader::new(reader).map_err(|source| CaptureFileError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let datalink = pcap.header().datalink;
    let mut frames = Vec::new();
    while let Some(packet) = pcap.next_raw_packet() {
        let index = frames.len();
        let packet = packet.map_err(|source| CaptureFileError::Corrupt { index, source })?;
        let link = link_of(datalink, index)?;
        let ethernet = to_ethernet(link, &packet.data, index)?.into_owned();
        frames.push(Frame {
            index,
            ethernet,
            truncated: packet.orig_len > packet.incl_len,
        });
    }
    Ok(frames)
}

fn read_pcapng(reader: impl Read, path: &Path) -> Result<Vec<Frame>, CaptureFileError> {
    let mut pcapng = PcapNgReader::new(reader).map_err(|source| CaptureFileError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let mut frames = Vec::new();
    // Interfaces are per section: a new section header starts the numbering again.
    let mut interfaces: Vec<DataLink> = Vec::new();
    while let Some(block) = pcapng.next_block() {
        let index = frames.len();
        let block = block.map_err(|source| CaptureFileError::Corrupt { index, source })?;
        let (interface, data, orig_len) = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(idb.linktype);
                continue;
            }
            Block::EnhancedPacket(epb) => (epb.interface_id, epb.data, epb.original_len),
            Block::SimplePacket(spb) => {
                let len = spb.data.len() as u32;
                (0, spb.data, spb.original_len.max(len))
            }
            Block::Packet(pb) => (u32::from(pb.interface_id), pb.data, pb.original_len),
            _ => continue,
        };
        let datalink =
            interfaces
                .get(interface as usize)
                .copied()
                .ok_or(CaptureFileError::Corrupt {
                    index,
                    source: PcapError::InvalidInterfaceId(interface),
                })?;
        let link = link_of(datalink, index)?;
        let ethernet = to_ethernet(link, &data, index)?.into_owned();
        frames.push(Frame {
            index,
            ethernet,
            truncated: orig_len as usize > data.len(),
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ip_gets_the_ethertype_of_its_version() {
        let v4 = [0x45, 0, 0, 20];
        let frame = to_ethernet(Link::RawIp, &v4, 0).unwrap();
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &v4);
        let v6 = [0x60, 0, 0, 0];
        assert_eq!(
            &to_ethernet(Link::RawIp, &v6, 0).unwrap()[12..14],
            &[0x86, 0xdd]
        );
        assert_eq!(
            &to_ethernet(Link::RawIp, &[0x10], 0).unwrap()[12..14],
            &[0, 0]
        );
    }

    #[test]
    fn short_cooked_header_names_the_packet() {
        let err = to_ethernet(Link::LinuxSll2, &[0; 10], 7).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("packet 7") && text.contains("SLL2"), "{text}");
    }
}
