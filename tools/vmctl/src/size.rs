//! Parsing of human-written byte sizes such as `4G`, `130M` or `4G+130M`.

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
/// A size is one or more terms joined by `+`. Each term is a decimal integer
/// optionally followed by a binary (1024-based) suffix `K`, `M`, `G` or `T`
/// (case-insensitive). Whitespace around terms is ignored. The total must fit
/// in a `u64`.
///
/// ```
/// use vmctl::size::parse_size;
/// assert_eq!(parse_size("4G+130M").unwrap(), (4 << 30) + (130 << 20));
/// ```
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_owned(),
        reason,
    };
    let mut total: u64 = 0;
    for term in input.split('+') {
        let term = term.trim();
        if term.is_empty() {
            return Err(err("empty term"));
        }
        let (digits, shift) = match term.as_bytes()[term.len() - 1].to_ascii_uppercase() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn suffixes_are_binary() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("130M"), Ok(130 << 20));
        assert_eq!(parse_size("4226M"), Ok(4226 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
    }

    #[test]
    fn sums() {
        assert_eq!(parse_size("4G+130M"), Ok((4 << 30) + (130 << 20)));
        assert_eq!(parse_size("4G+130M"), parse_size("4226M"));
        assert_eq!(parse_size(" 1G + 1M + 1 "), Ok((1 << 30) + (1 << 20) + 1));
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
        assert!(parse_size("16777216T").is_err()); // 2^24 * 2^40 = 2^64
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
        assert!(parse_size("18446744073709551615+1").is_err());
        let msg = parse_size("99999999999999999999G").unwrap_err().to_string();
        assert!(msg.contains("too large"), "{msg}");
    }
}
