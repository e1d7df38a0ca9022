//! Byte sizes: parsing human-written ones such as `4G`, `130M` or `4G+130M`, and printing
//! them in binary units.

use std::fmt;

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size {:?}: {} (expected bytes or a number with suffix K, M, G or T, \
             e.g. 4G, 130M, 4G+130M)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses a size in bytes.
///
/// A size is one or more terms joined by `+`. Each term is a decimal integer optionally
/// followed by a binary (1024-based) suffix `K`, `M`, `G` or `T` (case-insensitive).
/// Whitespace around terms is ignored. The total must fit in a `u64`.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_owned(),
        reason,
    };
    let mut total: u64 = 0;
    for term in input.split('+') {
        let term = term.trim();
        let Some(&last) = term.as_bytes().last() else {
            return Err(err("empty term"));
        };
        let (digits, shift) = match last.to_ascii_uppercase() {
            b'K' => (&term[..term.len() - 1], 10),
            b'M' => (&term[..term.len() - 1], 20),
            b'G' => (&term[..term.len() - 1], 30),
            b'T' => (&term[..term.len() - 1], 40),
            _ => (term, 0),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("not a number"));
        }
        let n: u64 = digits.parse().map_err(|_| err("too large"))?;
        let bytes = n
            .checked_mul(1u64 << shift)
            .ok_or_else(|| err("too large"))?;
        total = total.checked_add(bytes).ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Binary units, each 1024 times the one before.
const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `bytes` in the largest binary unit it reaches: without decimals when exact (`4 GiB`),
/// else rounded to 2 decimals with trailing zeros dropped (`4.13 GiB`, `1.5 GiB`). An inexact
/// size that rounds to a whole number keeps both zeros (`1.00 GiB`), so it never looks exact.
pub fn format_human(bytes: u64) -> String {
    let mut i = 0;
    while i + 1 < UNITS.len() && bytes >> (10 * (i + 1)) != 0 {
        i += 1;
    }
    let b = u128::from(bytes);
    let unit = 1u128 << (10 * i);
    if b % unit == 0 {
        return format!("{} {}", b / unit, UNITS[i]);
    }
    let mut hundredths = (b * 100 + unit / 2) / unit;
    if hundredths >= 1024 * 100 && i + 1 < UNITS.len() {
        // Rounded up to the next unit (e.g. 1 GiB - 1 byte).
        i += 1;
        let unit = 1u128 << (10 * i);
        hundredths = (b * 100 + unit / 2) / unit;
    }
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    if frac != 0 && frac % 10 == 0 {
        format!("{whole}.{} {}", frac / 10, UNITS[i])
    } else {
        format!("{whole}.{frac:02} {}", UNITS[i])
    }
}

/// `bytes` in bytes and in human form: `4294967296 (4 GiB)`.
pub fn format_bytes(bytes: u64) -> String {
    format!("{bytes} ({})", format_human(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn parses_plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1073741824"), Ok(GIB));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("130M"), Ok(130 * MIB));
        assert_eq!(parse_size("4G"), Ok(4 * GIB));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("2m"), Ok(2 * MIB));
    }

    #[test]
    fn parses_sums() {
        assert_eq!(parse_size("4G+130M"), Ok(4 * GIB + 130 * MIB));
        assert_eq!(parse_size("4G+130M"), parse_size("4226M"));
        assert_eq!(parse_size(" 1G + 1M + 1 "), Ok(GIB + MIB + 1));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", " ", "G", "4X", "4GB", "-1", "+1", "1+", "1++2", "1.5G", "0x10", "four", "4 G",
            "4é",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").is_err());
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        assert!(parse_size("18446744073709551615+1").is_err());
        let msg = parse_size("99999999999999999999G").unwrap_err().to_string();
        assert!(msg.contains("too large"), "{msg}");
    }

    #[test]
    fn formats_exact_sizes_without_decimals() {
        assert_eq!(format_human(0), "0 B");
        assert_eq!(format_human(1023), "1023 B");
        assert_eq!(format_human(1024), "1 KiB");
        assert_eq!(format_human(2 * MIB), "2 MiB");
        assert_eq!(format_human(128 * MIB), "128 MiB");
        assert_eq!(format_human(4 * GIB), "4 GiB");
        assert_eq!(format_human(16 << 40), "16 TiB");
        assert_eq!(format_human(1 << 60), "1 EiB");
    }

    #[test]
    fn formats_inexact_sizes_with_up_to_two_decimals() {
        assert_eq!(format_human(4 * GIB + 130 * MIB), "4.13 GiB");
        assert_eq!(format_human(GIB + GIB / 2), "1.5 GiB");
        assert_eq!(format_human(1536), "1.5 KiB");
        assert_eq!(format_human(GIB + 1), "1.00 GiB");
        assert_eq!(format_human(GIB - 1), "1.00 GiB");
        assert_eq!(format_human(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn formats_bytes_with_human_form() {
        assert_eq!(format_bytes(4 * GIB), "4294967296 (4 GiB)");
        assert_eq!(format_bytes(0), "0 (0 B)");
    }
}
