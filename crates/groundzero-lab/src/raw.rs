//! Sending whole Ethernet frames we built ourselves (spoofed sources, broken headers) out of an
//! interface with an `AF_PACKET` socket. Nothing is received on it (protocol 0), so it costs
//! nothing when idle.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// An `AF_PACKET` socket bound to one interface of the calling thread's namespace.
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    /// Opens the socket on `iface` (needs CAP_NET_RAW). Frames skip the qdisc: a veth has none
    /// worth going through, and the generator wants its pps to be what it asked for.
    pub fn open(iface: &str) -> io::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{iface}: {e}")))?;
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int that lives across the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one frame as is (destination MAC, source MAC, ethertype, payload).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for `frame.len()` bytes during the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Parses `02:67:7a:00:00:01`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Rewrites the MAC addresses of a frame built by [`crate::craft`] (which uses fixed ones).
pub fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:67:7a:00:06:0a"),
            Some([2, 0x67, 0x7a, 0, 6, 10])
        );
        assert_eq!(parse_mac("02:67:7a:00:06"), None);
        assert_eq!(parse_mac("02:67:7a:00:06:0a:01"), None);
    }
}
