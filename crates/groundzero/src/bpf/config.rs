//! The config map: the runtime switches the XDP program reads on every packet (monitor mode,
//! rate-limit settings, journey sampling).

use aya::maps::{Array, MapData};
use groundzero_common::maps::{Config, CONFIG};

use super::object::Object;
use crate::error::Error;

/// The one [`Config`] value, at index 0 of its array.
pub(crate) struct ConfigMap {
    map: Array<MapData, Config>,
}

impl ConfigMap {
    /// Takes the config map out of the loaded object.
    pub(crate) fn take(object: &mut Object) -> Result<Self, Error> {
        let map = Array::try_from(object.take_map(CONFIG)?).map_err(|source| Error::MapRead {
            map: CONFIG,
            source,
        })?;
        Ok(ConfigMap { map })
    }

    /// The switches as they are now.
    pub(crate) fn get(&self) -> Result<Config, Error> {
        self.map.get(&0, 0).map_err(|source| Error::MapRead {
            map: CONFIG,
            source,
        })
    }

    /// Read-modify-write (one writer: this process).
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut Config)) -> Result<(), Error> {
        let mut config = self.get()?;
        f(&mut config);
        self.map
            .set(0, config, 0)
            .map_err(|source| Error::MapWrite {
                map: CONFIG,
                source,
            })
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
