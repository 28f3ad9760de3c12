//! Parsers for flag values that carry units (`--duration 30s`,
//! `--wal-bytes 1GiB`), shared by every mode so the units read the same.

use std::time::Duration;

/// The longest duration a flag accepts: a week is longer than any bench run.
pub const DURATION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `30s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = split_number_unit(text, "a duration such as 30s, 500ms, 2m")?;
    let scale_s = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h)"
            ))
        }
    };
    let seconds = value * scale_s;
    if !seconds.is_finite() || seconds > DURATION_MAX.as_secs_f64() {
        return Err(format!(
            "duration `{text}` is longer than {} s",
            DURATION_MAX.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a size: `4096`, `64B`, `4KiB`, `16MiB`, `1GiB`, `1.5GiB`; decimal
/// `KB`/`MB`/`GB` are powers of 1000.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (value, unit) = split_number_unit(text, "a size such as 4KiB, 1GiB")?;
    let scale: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "T" => 1024.0f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size `{text}` is too large"));
    }
    Ok(bytes.round() as u64)
}

/// `"1.5 GiB"` → `(1.5, "GiB")`; `what` completes "`text` is not …".
fn split_number_unit<'a>(text: &'a str, what: &str) -> Result<(f64, &'a str), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    Ok((value, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("1000000h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64"), Ok(64));
        assert_eq!(parse_bytes("64B"), Ok(64));
        assert_eq!(parse_bytes("4KiB"), Ok(4096));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1 parsec").is_err());
    }
}
