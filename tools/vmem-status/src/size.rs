//! Byte sizes: parsing human-written ones such as `4G`, `130M` or `4G+130M` (vmctl's parser,
//! shared), and printing them in binary units.

pub use vmctl::size::parse_size;

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
