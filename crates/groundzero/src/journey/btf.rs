//! Kernel structure offsets and drop-reason names, read from the running kernel's BTF.
//!
//! The observer programs read a few `sk_buff` fields with `bpf_probe_read_kernel`. Their
//! offsets differ between kernels and configs, so they are looked up here at start-up instead of
//! being compiled in (Rust eBPF has no CO-RE relocations for field accesses yet).

use std::{collections::HashMap, path::Path};

use btf_rs::{Btf, Type};
use groundzero_common::journey::JourneyOffsets;

/// The running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF from {path} failed (journey tracing needs CONFIG_DEBUG_INFO_BTF)")]
    Open {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no `struct {0}`")]
    NoStruct(&'static str),
    #[error("kernel BTF has no member `{member}` in `struct {strukt}`")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("`{strukt}.{member}` is a bitfield; the observers cannot read it")]
    Bitfield {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("reading kernel BTF failed")]
    Parse(#[source] btf_rs::Error),
}

/// What journey tracing needs from BTF.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub offsets: JourneyOffsets,
    /// `enum skb_drop_reason` value → name without the `SKB_DROP_REASON_` prefix.
    pub drop_reasons: HashMap<u32, String>,
}

impl KernelInfo {
    /// Reads the running kernel's BTF.
    pub fn from_running_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let offsets = JourneyOffsets {
            skb_head: member_offset(&btf, "sk_buff", "head")?,
            skb_end: member_offset(&btf, "sk_buff", "end")?,
            skb_mac_header: member_offset(&btf, "sk_buff", "mac_header")?,
            shinfo_meta_len: member_offset(&btf, "skb_shared_info", "meta_len")?,
            sock_receive_queue: member_offset(&btf, "sock", "sk_receive_queue")?,
            sock_protocol: member_offset(&btf, "sock", "sk_protocol")?,
            sock_family: member_offset(&btf, "sock", "__sk_common")?
                + member_offset(&btf, "sock_common", "skc_family")?,
            udp_reader_queue: member_offset(&btf, "udp_sock", "reader_queue")?,
            list_prev: member_offset(&btf, "sk_buff_head", "prev")?,
            list_qlen: member_offset(&btf, "sk_buff_head", "qlen")?,
            magic: 0,
        };
        Ok(Self {
            offsets,
            drop_reasons: drop_reasons(&btf),
        })
    }

    /// The kernel's name for a drop reason, e.g. `NO_SOCKET`.
    pub fn drop_reason(&self, value: u32) -> String {
        self.drop_reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason_{value}"))
    }
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous structs and unions
/// (`sk_buff` keeps most header offsets inside `struct_group`s).
fn member_offset(btf: &Btf, strukt: &'static str, member: &'static str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt))?;
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s.clone()),
            _ => None,
        })
        .ok_or(BtfError::NoStruct(strukt))?;
    let (bits, bitfield) =
        find_member(btf, &s, member)?.ok_or(BtfError::NoMember { strukt, member })?;
    if bitfield || bits % 8 != 0 {
        return Err(BtfError::Bitfield { strukt, member });
    }
    Ok(bits / 8)
}

/// Depth-first search; returns the member's bit offset from the start of `s`.
fn find_member(btf: &Btf, s: &btf_rs::Struct, want: &str) -> Result<Option<(u32, bool)>, BtfError> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == want {
            let bitfield = m.bitfield_size().is_some_and(|size| size != 0);
            return Ok(Some((m.bit_offset(), bitfield)));
        }
        if name.is_empty() {
            // Anonymous struct or union: its members belong to `s`.
            let ty = btf.resolve_chained_type(m).map_err(BtfError::Parse)?;
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some((bits, bf)) = find_member(btf, inner, want)? {
                    return Ok(Some((m.bit_offset() + bits, bf)));
                }
            }
        }
    }
    Ok(None)
}

fn drop_reasons(btf: &Btf) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Ok(types) = btf.resolve_types_by_name("skb_drop_reason") else {
        return out;
    };
    for t in types {
        if let Type::Enum(e) = t {
            for member in &e.members {
                if let Ok(name) = btf.resolve_name(member) {
                    let name = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name);
                    out.insert(member.val(), name.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's kernel: the offsets must be plausible and the well-known reasons
    /// present. (Every kernel this project supports has BTF; no root needed to read it.)
    #[test]
    fn reads_running_kernel() {
        let info = KernelInfo::from_running_kernel().expect("kernel BTF");
        let o = info.offsets;
        assert!(o.skb_head > 0 && o.skb_head < 512, "{o:?}");
        assert!(o.skb_end > 0 && o.skb_end < 512, "{o:?}");
        assert!(o.skb_mac_header > 0 && o.skb_mac_header < 512, "{o:?}");
        assert!(o.shinfo_meta_len < 64, "{o:?}");
        assert_ne!(o.skb_head, o.skb_end);
        assert!(info.drop_reasons.values().any(|n| n == "NO_SOCKET"));
        assert_eq!(
            info.drop_reason(u32::MAX - 1),
            format!("reason_{}", u32::MAX - 1)
        );
    }
}
