//! UDP probes timed by the kernel's socket timestamps, the same way with or without XDP: the
//! sender's software TX stamp (taken by the veth driver as it transmits), the receiver's
//! software RX stamp (taken when the stack takes the skb, after XDP and GRO) and the
//! application's read time, all CLOCK_REALTIME. Nothing depends on the XDP program or its tag.

use std::{
    collections::HashMap,
    mem::{size_of, MaybeUninit},
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{cpu, AbError};

/// The three timestamps of one probe, ns since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    pub tx: i64,
    pub rx: i64,
    pub app: i64,
}

/// What one run of probes measured.
pub struct Probed {
    pub sent: u64,
    pub stamps: Vec<Stamps>,
    /// CPU ns of the reading thread over the run.
    pub reader_cpu_ns: Option<u64>,
}

fn set_timestamping(fd: RawFd, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: a c_uint option value of the right size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&flags as *const libc::c_uint).cast(),
            size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn realtime_ns() -> i64 {
    let mut ts = MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, ts.as_mut_ptr()) };
    // SAFETY: clock_gettime filled it (CLOCK_REALTIME cannot fail).
    let ts = unsafe { ts.assume_init() };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// What a `recvmsg` returned: bytes, the software timestamp and (error queue) the OPT_ID.
struct Received {
    len: usize,
    stamp: Option<i64>,
    id: Option<u32>,
}

fn recvmsg(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> std::io::Result<Received> {
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>();
    // SAFETY: `msg` describes live buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Received {
        len: n as usize,
        stamp: None,
        id: None,
    };
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            let data = libc::CMSG_DATA(c);
            if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPING {
                // scm_timestamping: [software, deprecated, hardware].
                let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                if ts.tv_sec != 0 || ts.tv_nsec != 0 {
                    out.stamp = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                }
            } else if (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR)
            {
                let err = std::ptr::read_unaligned(data.cast::<libc::sock_extended_err>());
                if err.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING {
                    out.id = Some(err.ee_data);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

/// TX stamps waiting on the sender's error queue, by probe number.
fn drain_tx(fd: RawFd, into: &mut HashMap<u32, i64>) {
    let mut buf = [0u8; 64];
    while let Ok(r) = recvmsg(fd, &mut buf, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) {
        if let (Some(id), Some(stamp)) = (r.id, r.stamp) {
            into.insert(id, stamp);
        }
    }
}

/// A receiving socket (made in the receiver's namespace) with RX software stamps on.
pub fn receiver(bind: SocketAddr) -> Result<UdpSocket, AbError> {
    let socket = UdpSocket::bind(bind).map_err(AbError::io(format!("binding {bind}")))?;
    set_timestamping(
        socket.as_raw_fd(),
        libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE,
    )
    .map_err(AbError::io("SO_TIMESTAMPING (rx) on the probe receiver"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(AbError::io("a read timeout on the probe receiver"))?;
    Ok(socket)
}

/// A sending socket (made in the sender's namespace) with TX software stamps numbered by probe.
pub fn sender(bind: SocketAddr, to: SocketAddr) -> Result<UdpSocket, AbError> {
    let socket = UdpSocket::bind(bind).map_err(AbError::io(format!("binding {bind}")))?;
    socket
        .connect(to)
        .map_err(AbError::io(format!("connecting to {to}")))?;
    set_timestamping(
        socket.as_raw_fd(),
        libc::SOF_TIMESTAMPING_TX_SOFTWARE
            | libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY,
    )
    .map_err(AbError::io("SO_TIMESTAMPING (tx) on the probe sender"))?;
    Ok(socket)
}

/// Sends `count` probes `gap` apart from `tx` to `rx` (fewer if `limit` runs out first) and
/// joins the three stamps of each.
pub fn run(
    tx: &UdpSocket,
    rx: &UdpSocket,
    count: u32,
    gap: Duration,
    limit: Duration,
) -> Result<Probed, AbError> {
    let done = AtomicBool::new(false);
    let (reads, reader_cpu_ns) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let start = cpu::this_thread_ns();
            let mut reads: HashMap<u32, (i64, i64)> = HashMap::new();
            let mut buf = [0u8; 64];
            while reads.len() < count as usize {
                match recvmsg(rx.as_raw_fd(), &mut buf, 0) {
                    Ok(r) => {
                        let app = realtime_ns();
                        if let (Some(stamp), true) = (r.stamp, r.len >= 4) {
                            let seq = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
                            reads.insert(seq, (stamp, app));
                        }
                    }
                    // The read timeout: stop once the sender is done and nothing more came.
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            let cpu = start.zip(cpu::this_thread_ns()).map(|(a, b)| b - a);
            (reads, cpu)
        });
        let mut tx_stamps = HashMap::new();
        let mut payload = [0u8; 32];
        let start = Instant::now();
        let mut next = start;
        let mut sent = 0u64;
        for seq in 0..count {
            // The time budget (the A/B answers one HTTP request): fewer probes, said in
            // `sent`, rather than a request that times out.
            if start.elapsed() > limit {
                break;
            }
            payload[..4].copy_from_slice(&seq.to_le_bytes());
            if tx.send(&payload).is_ok() {
                sent += 1;
            }
            drain_tx(tx.as_raw_fd(), &mut tx_stamps);
            next += gap;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(50));
        drain_tx(tx.as_raw_fd(), &mut tx_stamps);
        done.store(true, Ordering::Relaxed);
        let (reads, cpu) = reader.join().expect("the probe reader does not panic");
        ((reads, tx_stamps, sent), cpu)
    });
    let (reads, tx_stamps, sent) = reads;
    let mut stamps: Vec<Stamps> = reads
        .iter()
        .filter_map(|(seq, &(rx, app))| tx_stamps.get(seq).map(|&tx| Stamps { tx, rx, app }))
        .collect();
    stamps.sort_by_key(|s| s.tx);
    Ok(Probed {
        sent,
        stamps,
        reader_cpu_ns,
    })
}
