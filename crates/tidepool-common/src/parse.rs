//! The value grammars of contract §5.2: sizes (`"4gb"`, `"1.5 GB"`), durations (`"500ms"`,
//! `"10s"`) and booleans (`yes`/`off`/...). Used by the CLI, config files and the Python binding.

use crate::error::Error;

/// Parses a size: a decimal number (fraction allowed), optional spaces, an optional unit
/// `b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb` (powers of 1024, case-insensitive; `kib`-style
/// spellings too), or `"infinite"` for `u64::MAX`. The result is truncated to an integer.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim().to_ascii_lowercase();
    if t == "infinite" {
        return Ok(u64::MAX);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(Error::invalid(format!("size has no number: value={s:?}")));
    }
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(Error::invalid(format!("unknown size unit: value={s:?}"))),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| Error::invalid(format!("size overflows 64 bits: value={s:?}")));
    }
    let f: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("bad size number: value={s:?}")))?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(Error::invalid(format!("size out of range: value={s:?}")));
    }
    Ok(v as u64)
}

/// Parses a duration into milliseconds: a bare integer is milliseconds; otherwise a number
/// followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration_ms(s: &str) -> Result<u64, Error> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        _ => {
            return Err(Error::invalid(format!(
                "unknown duration unit: value={s:?}"
            )));
        }
    };
    let f: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("bad duration: value={s:?}")))?;
    let v = f * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(Error::invalid(format!(
            "duration out of range: value={s:?}"
        )));
    }
    Ok(v as u64)
}

/// Parses a boolean: `1/true/yes/on/enable` or `0/false/no/off/disable`, case-insensitive.
pub fn parse_bool(s: &str) -> Result<bool, Error> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "enable" | "y" => Ok(true),
        "0" | "false" | "no" | "off" | "disable" | "n" => Ok(false),
        _ => Err(Error::invalid(format!("not a boolean: value={s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_the_contract() {
        assert_eq!(parse_size("4gb").unwrap(), 4_294_967_296);
        assert_eq!(parse_size("512MB").unwrap(), 536_870_912);
        assert_eq!(parse_size("16 MB").unwrap(), 16_777_216);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("infinite").unwrap(), u64::MAX);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("10%").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations_and_bools() {
        assert_eq!(parse_duration_ms("500").unwrap(), 500);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("2m").unwrap(), 120_000);
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert!(parse_duration_ms("1d").is_err());
        assert!(parse_bool("Enable").unwrap());
        assert!(!parse_bool("False").unwrap());
        assert!(parse_bool("maybe").is_err());
    }
}
