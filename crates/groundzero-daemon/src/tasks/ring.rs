//! Kernel ring buffers (journey events, rate-limit reports) polled by the runtime.

use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

/// Registers a ring buffer with the runtime's poller.
pub(crate) fn register<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd (a ring buffer map) and keeps it open until the AsyncFd,
    // which owns `inner`, is dropped: the fd cannot be closed while registered.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}
