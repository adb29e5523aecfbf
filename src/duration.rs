//! Human durations (`30m`, `26h`, `2s`) as they appear in playbooks.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them: `90s`, `30m`, `26h`, `1h 30m`, `2d`.
/// Every number needs a unit (a bare `26` is refused, not read as seconds), and `M`, months
/// and years are refused: `30M` would be minutes to one reader and months to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct HumanDuration(pub Duration);

const HINT: &str = "write e.g. `90s`, `30m`, `26h`, `1h 30m` or `7d`";

impl HumanDuration {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if text.is_empty() {
            return Err(format!("a duration is empty: {HINT}"));
        }
        if let Ok(n) = text.parse::<f64>() {
            return Err(bare_number(&n.to_string()));
        }
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(digits);
            if number.is_empty() {
                return Err(format!("invalid duration `{text}`: {HINT}"));
            }
            let after = after.trim_start();
            let unit_len = after
                .find(|c: char| !c.is_alphabetic() && c != 'µ')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let value: f64 = number
                .parse()
                .map_err(|_| format!("invalid duration `{text}`: {HINT}"))?;
            if unit.is_empty() {
                return Err(bare_number(number));
            }
            total += value * unit_seconds(unit, number, text)?;
            rest = after.trim_start_matches([' ', ',']);
        }
        if !total.is_finite() || total > 100.0 * 365.0 * 86_400.0 {
            return Err(format!("duration `{text}` is too long"));
        }
        Ok(Self(Duration::from_secs_f64(total)))
    }
}

/// " in `1h 30M`" when the group is part of a longer duration.
fn within(number: &str, unit: &str, text: &str) -> String {
    if text == format!("{number}{unit}") {
        String::new()
    } else {
        format!(" in `{text}`")
    }
}

fn bare_number(number: &str) -> String {
    format!(
        "a duration needs a unit: `{number}` alone could be seconds or hours; write `{number}s`, `{number}m` or `{number}h`"
    )
}

/// Seconds in one `unit`; `number` and `text` only make the error say what to write instead.
fn unit_seconds(unit: &str, number: &str, text: &str) -> Result<f64, String> {
    Ok(match unit {
        "M" => {
            return Err(format!(
                "`{number}M`{} is ambiguous: write `{number}m` for minutes, or days or hours for months (`720h`, `30d`)",
                within(number, unit, text)
            ));
        }
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        _ => match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 7.0 * 86_400.0,
            "mo" | "month" | "months" | "y" | "yr" | "year" | "years" => {
                return Err(format!(
                    "`{number}{unit}`{}: months and years differ in length; write days or hours (`30d`, `720h`)",
                    within(number, unit, text)
                ));
            }
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in duration `{text}`: {HINT}"
                ));
            }
        },
    })
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

/// [`human`] for intervals of days (how often a drill is due, how long ago it passed):
/// `7d`, `2d 5h`, else as [`human`].
pub(crate) fn human_days(d: Duration) -> String {
    let hours = d.as_secs() / 3600;
    if hours < 24 {
        return human(d);
    }
    match hours % 24 {
        0 => format!("{}d", hours / 24),
        h => format!("{}d {h}h", hours / 24),
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
            Number(serde_json::Number),
            Text(String),
        }
        // A number is read like the same text, so `rpo: 26` gets the message `"26"` does.
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(text) => text,
        };
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration with its unit: `90s`, `30m`, `26h`, `1h 30m`, `7d` (a bare number, `M`, months and years are refused), or a template such as `{{ objectives.rpo }}`.",
            "type": "string",
            "pattern": "^(\\s*(0|([0-9]+(\\.[0-9]+)?\\s*(ns|us|µs|ms|[sSmhHdDwW]|[a-z]+)[ ,]*)+)\\s*|.*\\{\\{.*\\}\\}.*)$",
            "examples": ["30s", "10m", "26h", "1h 30m"]
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
            HumanDuration::parse("1.5h").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            HumanDuration::parse("2d 1H").unwrap().0,
            Duration::from_secs(2 * 86_400 + 3600)
        );
        assert_eq!(HumanDuration::parse("0").unwrap().0, Duration::ZERO);
        assert_eq!(HumanDuration::parse("26h").unwrap().to_string(), "26h");
        assert_eq!(HumanDuration::parse("90m").unwrap().to_string(), "1h 30m");
        assert!(
            HumanDuration::parse("soon")
                .unwrap_err()
                .contains("invalid duration `soon`")
        );
    }

    #[test]
    fn refuses_what_two_readers_would_read_differently() {
        let bare = HumanDuration::parse("26").unwrap_err();
        assert!(
            bare.contains("needs a unit") && bare.contains("`26h`"),
            "{bare}"
        );
        let months = HumanDuration::parse("30M").unwrap_err();
        assert!(
            months.contains("`30m` for minutes") && months.contains("`720h`"),
            "{months}"
        );
        for text in ["1mo", "2 months", "1y"] {
            let e = HumanDuration::parse(text).unwrap_err();
            assert!(e.contains("months and years differ"), "{text}: {e}");
        }
        let e: Result<HumanDuration, _> = serde_json::from_value(serde_json::json!(26));
        assert!(e.unwrap_err().to_string().contains("needs a unit"));
    }

    #[test]
    fn human_format_shows_every_unit() {
        assert_eq!(human(Duration::from_millis(12)), "12ms");
        assert_eq!(human(Duration::from_millis(3400)), "3.4s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(7257)), "2h 0m 57s");
    }
}
