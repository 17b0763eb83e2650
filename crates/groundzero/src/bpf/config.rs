//! The config map: the runtime switches the XDP program reads on every packet (monitor mode,
//! rate-limit settings, journey sampling).

use std::sync::{Arc, Mutex};

use aya::maps::{Array, MapData};
use groundzero_common::maps::{Config, CONFIG};

use super::object::Object;
use crate::error::Error;

/// The one [`Config`] value, at index 0 of its array. Shared (under a lock) with a running
/// capture, which must be able to clear its flag bit when it is dropped, without a lost update
/// of the other switches.
pub(crate) struct ConfigMap {
    map: Arc<Mutex<Array<MapData, Config>>>,
}

/// A handle on the config map that can outlive a borrow of the [`ConfigMap`].
pub(crate) type SharedConfig = Arc<Mutex<Array<MapData, Config>>>;

impl ConfigMap {
    /// Takes the config map out of the loaded object.
    pub(crate) fn take(object: &mut Object) -> Result<Self, Error> {
        let map = Array::try_from(object.take_map(CONFIG)?).map_err(|source| Error::MapRead {
            map: CONFIG,
            source,
        })?;
        Ok(ConfigMap {
            map: Arc::new(Mutex::new(map)),
        })
    }

    /// The switches as they are now.
    pub(crate) fn get(&self) -> Result<Config, Error> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&0, 0).map_err(|source| Error::MapRead {
            map: CONFIG,
            source,
        })
    }

    /// Read-modify-write (one writer: this process).
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut Config)) -> Result<(), Error> {
        update_shared(&self.map, f)
    }

    /// A handle for a capture, to clear its bit on its own.
    pub(crate) fn shared(&self) -> SharedConfig {
        Arc::clone(&self.map)
    }

    /// Monitor (dry-run) mode on or off.
    pub(crate) fn set_monitor(&mut self, on: bool) -> Result<(), Error> {
        self.update(|config| {
            config.flags = if on {
                config.flags | Config::MONITOR
            } else {
                config.flags & !Config::MONITOR
            };
        })
    }

    /// Rate limit settings; nothing changes when a prefix length is out of range (see
    /// [`Shield::set_rate_limit`](crate::Shield::set_rate_limit)).
    pub(crate) fn set_rate_limit(
        &mut self,
        rate_pps: u32,
        burst: u32,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Result<(), Error> {
        for (family, prefix_len, max) in [(4, prefix_v4, 32), (6, prefix_v6, 128)] {
            if !(1..=max).contains(&prefix_len) {
                return Err(Error::RatePrefix {
                    family,
                    prefix_len,
                    max,
                });
            }
        }
        self.update(|c| {
            c.rate_pps = rate_pps;
            c.rate_burst = burst.max(1);
            c.set_rate_prefixes(prefix_v4.into(), prefix_v6.into());
        })
    }
}

/// Read-modify-write of the config through a shared handle, under its lock.
pub(crate) fn update_shared(map: &SharedConfig, f: impl FnOnce(&mut Config)) -> Result<(), Error> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    let mut config = map.get(&0, 0).map_err(|source| Error::MapRead {
        map: CONFIG,
        source,
    })?;
    f(&mut config);
    map.set(0, config, 0).map_err(|source| Error::MapWrite {
        map: CONFIG,
        source,
    })
}
