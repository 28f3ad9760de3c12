//! Number formatting shared by the stdout summary and the HTML report, so a
//! figure reads the same in both (and a test can look for it in either).

/// An integer with thousands separators: `1234567` → `1,234,567`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A measured quantity with as many decimals as its size deserves:
/// `12345.6` → `12,346`, `42.25` → `42.2`, `1.234` → `1.23`, `4.0` → `4`.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let magnitude = value.abs();
    if magnitude >= 100.0 || (magnitude.fract() == 0.0 && magnitude < 1e15) {
        format!("{sign}{}", count(magnitude.round() as u64))
    } else if magnitude >= 10.0 {
        format!("{sign}{magnitude:.1}")
    } else {
        format!("{sign}{magnitude:.2}")
    }
}

/// A byte count in binary units: `1536` → `1.50 KiB`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{} {}", number(scaled), UNITS[unit])
    }
}

/// A JSON value as a table cell or summary word: numbers through `number`,
/// strings without quotes.
pub fn json_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(u) => count(u),
            None => number(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(number(12345.6), "12,346");
        assert_eq!(number(42.25), "42.2");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(4.0), "4");
        assert_eq!(number(-3.5), "-3.50");
        assert_eq!(number(f64::NAN), "n/a");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(3 << 30), "3 GiB");
        assert_eq!(json_value(&serde_json::json!(1500)), "1,500");
        assert_eq!(json_value(&serde_json::json!("x")), "x");
        assert_eq!(json_value(&serde_json::json!(true)), "true");
    }
}
