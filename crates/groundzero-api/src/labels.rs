//! String labels on the wire.
//!
//! Two kinds: enums that exist only on the wire (list sides, outcomes, ...), declared with
//! this module's `label_enum!`, and the kernel's own enums from `groundzero-common`
//! ([`Reason`], [`Action`], [`Stage`], [`Family`]), which have a `label()` but no serde of the
//! wire's: the modules [`reason`], [`action`], [`stage`] and [`family`] (de)serialize them by
//! that label with
//! `#[serde(with = "...")]`, so their names are defined once, next to the kernel's code.

use groundzero_common::{journey::Stage, lists::Family, Action, Reason};

/// A label that names none of a type's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}` ({expected})")]
pub struct UnknownLabel {
    /// What was being named (`outcome`, `list`, ...).
    pub what: &'static str,
    /// The label given, as given: whoever shows this error to a person escapes it (the
    /// daemon's messages have always quoted input raw; renderers escape them).
    pub given: String,
    /// The labels that exist, comma-separated.
    pub expected: String,
}

impl UnknownLabel {
    /// `given` was not one of `labels` for a `what`.
    pub fn new(
        what: &'static str,
        given: &str,
        labels: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        Self {
            what,
            given: given.to_string(),
            expected: labels.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// Declares a wire enum whose values travel as fixed strings: the enum, `ALL`, `LABELS`,
/// `label()`, `Display`, `FromStr` (error: [`UnknownLabel`]) and serde by label (reading is
/// serde's derive, so a bad label gets the very message a derived enum's always got).
/// Variants are ordered as declared (`Ord`): declare them in label order where maps are keyed
/// by them.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $label)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every label, in declaration order.
            pub const LABELS: &'static [&'static str] = &[$($label),+];

            /// The string this value travels as.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.label())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = crate::labels::UnknownLabel;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.label() == s)
                    .ok_or_else(|| {
                        crate::labels::UnknownLabel::new($what, s, Self::ALL.iter().map(|v| v.label()))
                    })
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.label())
            }
        }
    };
}
pub(crate) use label_enum;

/// Deserializes a string and parses it with `FromStr`, the parse error as the message.
pub fn deserialize_parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<T> serde::de::Visitor<'_> for Visitor<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string label")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor(std::marker::PhantomData))
}

/// The counter reason a label names (`blocked_exact`, ...).
pub fn parse_reason(s: &str) -> Result<Reason, UnknownLabel> {
    Reason::ALL
        .iter()
        .copied()
        .find(|r| r.label() == s)
        .ok_or_else(|| UnknownLabel::new("reason", s, Reason::ALL.iter().map(|r| r.label())))
}

/// The verdict a label names (`pass`, `drop`).
pub fn parse_action(s: &str) -> Result<Action, UnknownLabel> {
    [Action::Pass, Action::Drop]
        .into_iter()
        .find(|a| a.label() == s)
        .ok_or_else(|| UnknownLabel::new("verdict", s, ["pass", "drop"]))
}

/// The journey stage a label names (`xdp`, `stack`, ...).
pub fn parse_stage(s: &str) -> Result<Stage, UnknownLabel> {
    Stage::ALL
        .iter()
        .copied()
        .find(|st| st.label() == s)
        .ok_or_else(|| UnknownLabel::new("stage", s, Stage::ALL.iter().map(|st| st.label())))
}

/// The address family a label names (`ipv4`, `ipv6`).
pub fn parse_family(s: &str) -> Result<Family, UnknownLabel> {
    Family::ALL
        .iter()
        .copied()
        .find(|f| f.label() == s)
        .ok_or_else(|| UnknownLabel::new("family", s, Family::ALL.iter().map(|f| f.label())))
}

/// Generates a `serde(with)` module for a foreign enum with a `label()` and a parser.
macro_rules! label_module {
    ($(#[$meta:meta])* $module:ident, $ty:ty, $parse:path) => {
        $(#[$meta])*
        pub mod $module {
            use super::*;

            /// Writes the label.
            pub fn serialize<S: serde::Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(v.label())
            }

            /// Reads a label, refusing unknown ones.
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                $parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_module!(
    /// `#[serde(with = "groundzero_api::labels::reason")]` for a [`Reason`].
    reason, Reason, parse_reason
);
label_module!(
    /// `#[serde(with = "groundzero_api::labels::action")]` for an [`Action`] (a verdict).
    action, Action, parse_action
);
label_module!(
    /// `#[serde(with = "groundzero_api::labels::stage")]` for a journey [`Stage`].
    stage, Stage, parse_stage
);
label_module!(
    /// `#[serde(with = "groundzero_api::labels::family")]` for a [`Family`] as its label
    /// (`ipv4`; common's own serde says `v4`, which is not the wire's word).
    family, Family, parse_family
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_labels_parse_back() {
        for r in Reason::ALL {
            assert_eq!(parse_reason(r.label()), Ok(r));
        }
        for s in Stage::ALL {
            assert_eq!(parse_stage(s.label()), Ok(s));
        }
        assert_eq!(parse_action("drop"), Ok(Action::Drop));
        let e = parse_reason("blocked").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown reason `blocked` (no_match, allowlisted, "),
            "{e}"
        );
    }
}
