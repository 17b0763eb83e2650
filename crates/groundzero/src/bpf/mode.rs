//! XDP attach modes: the one asked for and the one the kernel gave.

use std::fmt;

/// How to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode if the driver supports it, else generic.
    #[default]
    Auto,
    /// Native only: fail rather than fall back.
    Native,
    /// Generic (skb) mode: works on every interface, runs after the skb is allocated.
    Generic,
}

/// The mode an attachment actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveMode {
    Native,
    Generic,
}

impl ActiveMode {
    /// `native` or `generic`: also the name of its directory of pinned links.
    pub const fn label(self) -> &'static str {
        match self {
            ActiveMode::Native => "native",
            ActiveMode::Generic => "generic",
        }
    }
}

impl fmt::Display for ActiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
