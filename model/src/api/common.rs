//! Types shared by several resources: durations, percentages, string matches, destinations.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A protobuf Duration as Istio's YAML writes it: Go duration syntax (`1.5s`, `100ms`, `3m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }

    pub fn as_std(self) -> StdDuration {
        self.0
    }

    /// Parses Go duration syntax: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        if s == "0" {
            return Ok(Duration(StdDuration::ZERO));
        }
        let mut rest = s;
        let mut total_ns: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(format!("`{text}` is not a duration: expected a number before `{rest}`"));
            }
            let number: f64 = rest[..num_len]
                .parse()
                .map_err(|_| format!("`{text}` is not a duration"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(format!("`{text}` has no unit: write e.g. `{number}s` or `{number}ms`")),
                u => return Err(format!("`{text}` has an unknown unit `{u}`: use ns, us, ms, s, m or h")),
            };
            total_ns += number * scale;
            rest = &rest[unit_len..];
        }
        Ok(Duration(StdDuration::from_nanos(total_ns.round() as u64)))
    }
}

impl fmt::Display for Duration {
    /// Protobuf JSON style: seconds with as many decimals as needed, e.g. `1.5s`, `0.100s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        let nanos = d.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{secs}.{nanos:09}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `{value: double}`: a percentage in [0, 100].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Percent {
    pub value: f64,
}

/// `exact` | `prefix` | `regex`. An empty match (`{}`) is a presence match where Istio allows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

impl StringMatch {
    pub fn exact(s: &str) -> Self {
        StringMatch {
            exact: Some(s.into()),
            ..Default::default()
        }
    }

    pub fn prefix(s: &str) -> Self {
        StringMatch {
            prefix: Some(s.into()),
            ..Default::default()
        }
    }

    pub fn regex(s: &str) -> Self {
        StringMatch {
            regex: Some(s.into()),
            ..Default::default()
        }
    }

    /// How many of the oneof's alternatives are set.
    pub fn set_count(&self) -> usize {
        [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|o| o.is_some())
            .count()
    }
}

/// `{number}`: a port selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortSelector {
    pub number: u32,
}

/// Where traffic goes: a registry host, an optional subset and port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

/// `type.v1beta1.WorkloadSelector` (DestinationRule): `{matchLabels}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MatchLabelsSelector {
    pub match_labels: Labels,
}

/// Labels as Kubernetes writes them.
pub type Labels = std::collections::BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            ("100ms", 100_000_000),
            ("3m", 180_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("250us", 250_000),
            ("0", 0),
        ];
        for (text, nanos) in cases {
            assert_eq!(Duration::parse(text).map(|d| d.0.as_nanos()), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(Duration::parse("10").unwrap_err().contains("no unit"));
        assert!(Duration::parse("10x").unwrap_err().contains("unknown unit"));
        assert!(Duration::parse("s").unwrap_err().contains("expected a number"));
    }

    #[test]
    fn durations_print_like_protobuf_json() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1.500s");
        assert_eq!(Duration::from_millis(3000).to_string(), "3s");
        assert_eq!(
            Duration::parse(&Duration::from_millis(100).to_string()),
            Ok(Duration::from_millis(100))
        );
    }
}
