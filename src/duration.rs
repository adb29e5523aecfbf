//! Human durations (`30m`, `26h`, `2s`) as they appear in playbooks.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them: `90s`, `30m`, `26h`, `1h 30m`.
/// A bare number is read as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct HumanDuration(pub Duration);

impl HumanDuration {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Self(Duration::from_secs(secs)));
        }
        humantime::parse_duration(text).map(Self).map_err(|err| {
            format!("invalid duration `{text}`: {err} (write e.g. `90s`, `30m`, `26h`)")
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Compact rendering that round-trips through [`HumanDuration::parse`]:
/// `26h`, `1h 30m`, `1.250s` is rendered as `1s 250ms`.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if ms >= size {
            parts.push(format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    parts.join(" ")
}

/// A duration for people (tables, progress, reports): milliseconds below a second,
/// tenths below a minute, then whole seconds with every unit shown, so `2h 0m 57s` cannot
/// be misread as two minutes.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!(
            "{}h {}m {}s",
            ms / 3_600_000,
            (ms / 60_000) % 60,
            (ms / 1000) % 60
        )
    }
}

/// [`human`] of a number of milliseconds.
pub(crate) fn human_ms(ms: u64) -> String {
    human(Duration::from_millis(ms))
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(secs) => Ok(Self(Duration::from_secs(secs))),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as `90s`, `30m`, `26h` or `1h 30m`; a bare number is seconds.",
            "anyOf": [
                { "type": "string", "examples": ["30s", "10m", "26h"] },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for text in ["26h", "30m", "2s", "1h 30m", "250ms"] {
            let d = HumanDuration::parse(text).unwrap();
            assert_eq!(HumanDuration::parse(&d.to_string()).unwrap(), d, "{text}");
        }
        assert_eq!(
            HumanDuration::parse("90").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(HumanDuration::parse("26h").unwrap().to_string(), "26h");
        assert_eq!(HumanDuration::parse("90m").unwrap().to_string(), "1h 30m");
        assert!(
            HumanDuration::parse("soon")
                .unwrap_err()
                .contains("invalid duration `soon`")
        );
    }

    #[test]
    fn human_format_shows_every_unit() {
        assert_eq!(human(Duration::from_millis(12)), "12ms");
        assert_eq!(human(Duration::from_millis(3400)), "3.4s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(7257)), "2h 0m 57s");
    }
}
