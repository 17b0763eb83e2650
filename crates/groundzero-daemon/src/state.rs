//! The daemon's state: one [`Daemon`] behind one lock ([`Shared`]), which handlers and tasks
//! take for each change. Its fields are the crate's own.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use groundzero::Shield;
use ipnet::IpNet;

use crate::{config::Validated, journey::hub::JourneyHub, registry::Registry};

/// Everything the API handlers and background tasks share. Its fields are the crate's own:
/// handlers and tasks change them under the [`Shared`] lock.
pub struct Daemon {
    pub(crate) shield: Shield,
    /// The lists' records; every block goes through its guard.
    pub(crate) registry: Registry,
    pub(crate) config: Validated,
    /// Prefixes the XDP rate limit is told never to count (configured, protected and the
    /// management addresses, kept current by [`crate::tasks::guard`]).
    pub(crate) rate_exempt: BTreeSet<IpNet>,
    pub(crate) started: Instant,
    /// Journey statistics and live viewers (its own lock: see [`JourneyHub`]).
    pub(crate) journey: Arc<Mutex<JourneyHub>>,
    /// The CrowdSec bouncer's last pulls (`[crowdsec]`; None when not configured).
    pub(crate) crowdsec: Option<crate::tasks::crowdsec::CrowdsecStatus>,
}

/// The daemon's state as handlers and tasks hold it.
pub type Shared = Arc<Mutex<Daemon>>;
