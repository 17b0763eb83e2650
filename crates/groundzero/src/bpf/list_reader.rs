//! [`ListReader`]: read-only handles on the six list maps, apart from the [`Shield`](crate::Shield).
//!
//! Reading every entry of a million-entry list takes about a second. A daemon that did that
//! while holding the lock around its shield (for a Prometheus scrape's top-N, say) would stall
//! every block and unblock meanwhile. A reader owns its own file descriptors of the same kernel
//! maps, so it can be taken under the lock in microseconds and used after releasing it.

use groundzero_common::lists::ListKind;

use super::list_maps::{ListEntry, ListMaps};
use crate::error::Error;

/// Read-only access to the lists of one [`Shield`](crate::Shield), usable without it.
pub struct ListReader {
    maps: ListMaps,
}

impl std::fmt::Debug for ListReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListReader").finish_non_exhaustive()
    }
}

impl ListReader {
    /// A reader over `maps`, which are its own handles (see [`ListMaps::try_clone`]).
    pub(crate) fn new(maps: ListMaps) -> Self {
        ListReader { maps }
    }

    /// Every blocked address and prefix with its hits, in no particular order.
    pub fn blocked(&self) -> Result<Vec<ListEntry>, Error> {
        let mut entries = self.list(ListKind::BlockExact)?;
        entries.extend(self.list(ListKind::BlockCidr)?);
        Ok(entries)
    }

    /// Every allowed address and prefix with its hits, in no particular order.
    pub fn allowed(&self) -> Result<Vec<ListEntry>, Error> {
        self.list(ListKind::Allow)
    }

    /// One list, both families, in no particular order.
    pub fn list(&self, list: ListKind) -> Result<Vec<ListEntry>, Error> {
        self.maps.list(list)
    }
}
