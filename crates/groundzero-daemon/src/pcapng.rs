//! Captured packets as a pcapng stream (written with `pcap-file`): a section header, one
//! interface description block per interface as its first packet arrives, and one enhanced
//! packet block per packet, with the inbound flag, the loss count and the verdict comment.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use groundzero::capture::CaptureRecord;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink, PcapError,
};

/// `epb_flags`: bits 0-1 are the direction, 01 = inbound (XDP sees only received packets).
const INBOUND: u32 = 0b01;
/// `if_tsresol`: timestamps in nanoseconds (10^-9).
const NANOSECONDS: u8 = 9;

/// A pcapng writer whose bytes are taken out as they are written, to be streamed.
pub struct PcapngStream {
    writer: PcapNgWriter<Vec<u8>>,
    /// ifindex → interface id in this section.
    interfaces: HashMap<u32, u32>,
    snaplen: u32,
}

impl PcapngStream {
    /// A stream that begins with its section header.
    pub fn new(snaplen: u32) -> Result<Self, PcapError> {
        Ok(Self {
            writer: PcapNgWriter::new(Vec::new())?,
            interfaces: HashMap::new(),
            snaplen,
        })
    }

    /// Appends one packet (and its interface's description block the first time), with
    /// `comment` as its `opt_comment`.
    pub fn packet(&mut self, record: &CaptureRecord, comment: String) -> Result<(), PcapError> {
        let ifindex = record.meta.ifindex;
        let interface_id = match self.interfaces.get(&ifindex) {
            Some(id) => *id,
            None => {
                let id = self.interfaces.len() as u32;
                let block = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: self.snaplen,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(interface_name(ifindex))),
                        InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
                    ],
                };
                self.writer.write_pcapng_block(block)?;
                self.interfaces.insert(ifindex, id);
                id
            }
        };
        let mut options = vec![
            EnhancedPacketOption::Comment(Cow::Owned(comment)),
            EnhancedPacketOption::Flags(INBOUND),
        ];
        if record.lost_before > 0 {
            options.push(EnhancedPacketOption::DropCount(record.lost_before));
        }
        self.writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(record.unix_ns),
            original_len: record.meta.packet_len,
            data: Cow::Borrowed(&record.data),
            options,
        })?;
        Ok(())
    }

    /// The bytes written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.get_mut())
    }
}

/// The interface's name, or `ifindex N` if it is gone (or in another namespace).
fn interface_name(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero_common::capture::CaptureMeta;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn packets_read_back_with_their_interface_comment_and_losses() {
        let mut s = PcapngStream::new(64).unwrap();
        let record = CaptureRecord {
            meta: CaptureMeta {
                ifindex: 1,
                packet_len: 100,
                captured_len: 4,
                ..Default::default()
            },
            data: vec![1, 2, 3, 4],
            unix_ns: 1_700_000_000_123_456_789,
            lost_before: 7,
        };
        s.packet(&record, "verdict=drop".into()).unwrap();
        s.packet(&record, "again".into()).unwrap();
        let bytes = s.take();
        assert!(s.take().is_empty());
        let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
        let mut blocks = Vec::new();
        while let Some(b) = reader.next_block() {
            blocks.push(b.unwrap().into_owned());
        }
        let idbs = blocks
            .iter()
            .filter(|b| matches!(b, Block::InterfaceDescription(_)))
            .count();
        assert_eq!(idbs, 1);
        let Some(Block::EnhancedPacket(epb)) = blocks
            .iter()
            .find(|b| matches!(b, Block::EnhancedPacket(_)))
        else {
            panic!("no packet in {blocks:?}");
        };
        assert_eq!(epb.data.as_ref(), &[1, 2, 3, 4]);
        assert_eq!(epb.original_len, 100);
        assert_eq!(
            epb.timestamp,
            Duration::from_nanos(1_700_000_000_123_456_789)
        );
        assert!(epb.options.contains(&EnhancedPacketOption::DropCount(7)));
        assert!(epb
            .options
            .contains(&EnhancedPacketOption::Comment("verdict=drop".into())));
    }
}
