//! Durations on the command line: `500ms`, `2s`, `1.5s`, `1m`, `1h`, or plain seconds (`3`).

use std::time::Duration;

/// Parses a duration: a non-negative number, optionally with a fraction, followed by `ms`,
/// `s`, `m` or `h`; a bare number is seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let valid_number = !number.is_empty() && number.bytes().filter(|&b| b == b'.').count() <= 1 && number != ".";
    let value: f64 = match number.parse() {
        Ok(value) if valid_number => value,
        _ => return Err(format!("invalid duration {text:?}: expected a number and a unit, e.g. 500ms, 2s, 1m, 1h")),
    };
    let unit_seconds = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!("unknown unit {other:?} in duration {text:?}: use ms, s, m or h (e.g. 500ms, 2s)"))
        }
    };
    Duration::try_from_secs_f64(value * unit_seconds).map_err(|_| format!("duration {text:?} is too long"))
}

/// Shows a duration compactly: `850µs`, `12.3ms`, `2.35s`, `3m05s`.
pub fn show(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.001 {
        format!("{}µs", d.as_micros())
    } else if secs < 0.1 {
        format!("{:.1}ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        let whole = d.as_secs();
        if whole < 3600 {
            format!("{}m{:02}s", whole / 60, whole % 60)
        } else {
            format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_seconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(".5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage_saying_why() {
        for bad in ["", "s", "-1s", "2 weeks", "1d", "1.2.3s", ".", "ms5", "1e3"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad:?}: {err}");
        }
        assert!(parse("100000000000000000000000h").unwrap_err().contains("too long"));
    }

    #[test]
    fn shows_compactly() {
        assert_eq!(show(Duration::from_micros(850)), "850µs");
        assert_eq!(show(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(show(Duration::from_millis(2340)), "2.34s");
        assert_eq!(show(Duration::from_secs(185)), "3m05s");
        assert_eq!(show(Duration::from_secs(7260)), "2h01m");
    }
}
