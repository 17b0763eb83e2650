//! The XDP program's counters as they travel: packets and bytes per [`Reason`].

use std::{collections::BTreeMap, fmt};

use groundzero_common::{Action, Reason};
use serde::{
    de::{MapAccess, Visitor},
    ser::SerializeMap,
    Deserialize, Deserializer, Serialize, Serializer,
};

/// What one reason counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    /// Bytes of those packets (whole frames).
    pub bytes: u64,
    /// Packets counted under the reason.
    pub packets: u64,
}

impl std::ops::Add for CounterView {
    type Output = CounterView;
    fn add(self, other: CounterView) -> CounterView {
        CounterView {
            bytes: self.bytes + other.bytes,
            packets: self.packets + other.packets,
        }
    }
}

/// One [`CounterView`] for every [`Reason`]. On the wire an object keyed by the reasons'
/// labels in label order, every reason present (`{"allowlisted": {...}, "blocked_cidr": ...}`);
/// reading one refuses unknown and missing reasons, so client and daemon cannot drift apart
/// silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounters([CounterView; Reason::ALL.len()]);

impl ReasonCounters {
    /// The counters of `reason`.
    pub fn get(&self, reason: Reason) -> CounterView {
        self.0[reason as usize]
    }

    /// Sets the counters of `reason`.
    pub fn set(&mut self, reason: Reason, value: CounterView) {
        self.0[reason as usize] = value;
    }

    /// Every reason with its counters, in counter-index order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, CounterView)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// Every reason with its counters, in label order (as on the wire).
    pub fn by_label(&self) -> impl Iterator<Item = (Reason, CounterView)> + '_ {
        let sorted: BTreeMap<&str, Reason> = Reason::ALL.iter().map(|&r| (r.label(), r)).collect();
        sorted.into_values().map(|r| (r, self.get(r)))
    }

    /// The sum over the reasons `pick` chooses.
    pub fn sum(&self, pick: impl Fn(Reason) -> bool) -> CounterView {
        self.iter()
            .filter(|(r, _)| pick(*r))
            .fold(CounterView::default(), |acc, (_, c)| acc + c)
    }

    /// Everything that got `action`.
    pub fn by_action(&self, action: Action) -> CounterView {
        self.sum(|r| r.action() == action)
    }
}

impl FromIterator<(Reason, CounterView)> for ReasonCounters {
    fn from_iter<I: IntoIterator<Item = (Reason, CounterView)>>(iter: I) -> Self {
        let mut out = ReasonCounters::default();
        for (r, c) in iter {
            out.set(r, c);
        }
        out
    }
}

impl Serialize for ReasonCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(Reason::ALL.len()))?;
        for (r, c) in self.by_label() {
            map.serialize_entry(r.label(), &c)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ReasonCounters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountersVisitor;
        impl<'de> Visitor<'de> for CountersVisitor {
            type Value = ReasonCounters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of counters keyed by reason")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReasonCounters, A::Error> {
                let mut out = ReasonCounters::default();
                let mut seen = [false; Reason::ALL.len()];
                while let Some((label, value)) = map.next_entry::<String, CounterView>()? {
                    let reason =
                        crate::labels::parse_reason(&label).map_err(serde::de::Error::custom)?;
                    seen[reason as usize] = true;
                    out.set(reason, value);
                }
                match Reason::ALL.iter().find(|r| !seen[**r as usize]) {
                    Some(missing) => Err(serde::de::Error::custom(format!(
                        "no counters for reason `{}`",
                        missing.label()
                    ))),
                    None => Ok(out),
                }
            }
        }
        d.deserialize_map(CountersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_travels_in_label_order() {
        let c: ReasonCounters = Reason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    CounterView {
                        bytes: r as u64 * 100,
                        packets: r as u64,
                    },
                )
            })
            .collect();
        let text = serde_json::to_string(&c).unwrap();
        // The daemon used to send a serde_json::Map: sorted keys.
        let via_value = serde_json::to_value(c).unwrap().to_string();
        assert_eq!(text, via_value);
        assert!(
            text.starts_with(r#"{"allowlisted":{"bytes":100,"packets":1},"blocked_cidr""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ReasonCounters>(&text).unwrap(), c);
        assert_eq!(c.by_action(Action::Drop).packets, 4 + 5 + 8);
    }

    #[test]
    fn unknown_or_missing_reasons_are_refused() {
        let mut v = serde_json::to_value(ReasonCounters::default()).unwrap();
        v["lost"] = serde_json::json!({"bytes": 0, "packets": 0});
        let e = serde_json::from_value::<ReasonCounters>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("unknown reason `lost`"), "{e}");
        v.as_object_mut().unwrap().remove("lost");
        v.as_object_mut().unwrap().remove("no_match");
        let e = serde_json::from_value::<ReasonCounters>(v).unwrap_err();
        assert!(
            e.to_string().contains("no counters for reason `no_match`"),
            "{e}"
        );
    }
}
