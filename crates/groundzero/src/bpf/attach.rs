//! Attaching the XDP program to interfaces and detaching it, with links pinned or adopted when
//! the shield pins.

use std::path::Path;

use aya::programs::{links::PinnedLink, xdp::XdpLinkId, ProgramError, Xdp, XdpMode};

use super::{
    mode::{ActiveMode, AttachMode},
    pins,
};
use crate::error::Error;

/// One interface the program is attached to.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    /// The interface's index in the namespace it was attached in.
    pub ifindex: u32,
    pub mode: ActiveMode,
    /// True if an attachment pinned by an earlier process was taken over (its program replaced
    /// atomically by this one) rather than made anew.
    pub adopted: bool,
    link: LinkHandle,
}

#[derive(Debug)]
enum LinkHandle {
    /// Managed by aya: detached when the shield is dropped (or, if it is also pinned, kept by
    /// the pin).
    Managed(XdpLinkId),
    /// Made and pinned by this shield; outlives it.
    Pinned(PinnedLink),
}

/// The interfaces the XDP program is attached to.
#[derive(Debug, Default)]
pub(crate) struct Attachments {
    list: Vec<Attachment>,
}

impl Attachments {
    /// Every attachment, in the order made.
    pub(crate) fn all(&self) -> &[Attachment] {
        &self.list
    }

    /// Attaches `program` to `interface` (in the caller's network namespace) and returns the
    /// mode it got. With `pin_dir`, a link pinned there is adopted, and a new one is pinned.
    pub(crate) fn attach(
        &mut self,
        program: &mut Xdp,
        pin_dir: Option<&Path>,
        interface: &str,
        mode: AttachMode,
    ) -> Result<ActiveMode, Error> {
        if self.list.iter().any(|a| a.interface == interface) {
            return Err(Error::AlreadyAttached {
                interface: interface.to_string(),
            });
        }
        if let Some(dir) = pin_dir {
            if let Some(active) = self.adopt_pinned(program, interface, dir)? {
                return Ok(active);
            }
        }
        let attempt = |program: &mut Xdp, active: ActiveMode| {
            let xdp_mode = match active {
                ActiveMode::Native => XdpMode::Driver,
                ActiveMode::Generic => XdpMode::Skb,
            };
            program
                .attach(interface, xdp_mode)
                .map_err(|source| match source {
                    ProgramError::UnknownInterface { .. } => Error::NoSuchInterface {
                        interface: interface.to_string(),
                    },
                    source => Error::Attach {
                        interface: interface.to_string(),
                        mode: active.label(),
                        source,
                    },
                })
        };
        let (link, active) = match mode {
            AttachMode::Native => (attempt(program, ActiveMode::Native)?, ActiveMode::Native),
            AttachMode::Generic => (attempt(program, ActiveMode::Generic)?, ActiveMode::Generic),
            AttachMode::Auto => match attempt(program, ActiveMode::Native) {
                Ok(link) => (link, ActiveMode::Native),
                Err(e @ Error::NoSuchInterface { .. }) => return Err(e),
                Err(native_error) => {
                    log::info!("native XDP on {interface} failed ({native_error}); using generic");
                    (attempt(program, ActiveMode::Generic)?, ActiveMode::Generic)
                }
            },
        };
        let link = match pin_dir {
            None => LinkHandle::Managed(link),
            Some(dir) => {
                let path = pins::link_path(dir, interface, active);
                LinkHandle::Pinned(pins::pin_link(program, link, &path)?)
            }
        };
        self.record(interface, active, false, link);
        Ok(active)
    }

    fn record(&mut self, interface: &str, mode: ActiveMode, adopted: bool, link: LinkHandle) {
        // Looked up after attaching, in the same (caller's) namespace that attach used.
        let ifindex = nix::net::if_::if_nametoindex(interface).unwrap_or(0);
        self.list.push(Attachment {
            interface: interface.to_string(),
            ifindex,
            mode,
            adopted,
            link,
        });
    }

    /// Takes over an XDP link pinned by an earlier process: the kernel swaps the program in the
    /// link atomically (bpf_link_update), so there is no moment without filtering.
    fn adopt_pinned(
        &mut self,
        program: &mut Xdp,
        interface: &str,
        dir: &Path,
    ) -> Result<Option<ActiveMode>, Error> {
        let Some((path, mode)) = pins::find_link(dir, interface) else {
            return Ok(None);
        };
        match pins::adopt_link(program, &path)? {
            Some(id) => {
                self.record(interface, mode, true, LinkHandle::Managed(id));
                Ok(Some(mode))
            }
            None => {
                log::warn!(
                    "{}: pinned link is defunct (interface gone?); re-attaching",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// Detaches `program` from `interface`.
    pub(crate) fn detach(
        &mut self,
        program: &mut Xdp,
        pin_dir: Option<&Path>,
        interface: &str,
    ) -> Result<(), Error> {
        let index = self
            .list
            .iter()
            .position(|a| a.interface == interface)
            .ok_or_else(|| Error::NotAttached {
                interface: interface.to_string(),
            })?;
        let attachment = self.list.remove(index);
        if let Some(dir) = pin_dir {
            // Unpinning is what really detaches a pinned link once our fd is closed too.
            let _ = std::fs::remove_file(pins::link_path(dir, interface, attachment.mode));
        }
        match attachment.link {
            LinkHandle::Managed(id) => program.detach(id).map_err(|source| Error::Detach {
                interface: interface.to_string(),
                source,
            }),
            LinkHandle::Pinned(pinned) => {
                drop(pinned);
                Ok(())
            }
        }
    }
}
