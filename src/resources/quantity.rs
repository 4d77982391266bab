//! Kubernetes quantities (`100m`, `1.5Gi`, `2e3`): parsed exactly enough to
//! validate them and to compare resource amounts (the scheduler sums them
//! in milli-units and bytes).

/// The regular expression Kubernetes quotes when a quantity does not parse.
pub const QUANTITY_FORMAT: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// A parsed quantity, as a multiple of 1/1000 of its unit (so `100m` CPU is
/// 100 and `1Gi` bytes is 1073741824000). Large enough for any real amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(pub i128);

impl Quantity {
    /// Whole units, rounded up (bytes for memory, cores for CPU).
    pub fn ceil_units(self) -> i128 {
        (self.0 + 999).div_euclid(1000)
    }

    /// Milli-units (millicores for CPU).
    pub fn milli(self) -> i128 {
        self.0
    }
}

/// Parse a quantity. `None` when it does not match Kubernetes' format.
pub fn parse(s: &str) -> Option<Quantity> {
    // No surrounding spaces: Kubernetes refuses "1Gi " too.
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1i128, &s[1..]),
        b'-' => (-1i128, &s[1..]),
        _ => (1i128, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // Value in units of 10^-frac_len.
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let frac_len = frac_part.len() as i32;
    // The multiplier as (binary power of two, decimal power of ten).
    let (bin, dec): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if !(-30..=30).contains(&exp) {
                return None;
            }
            (0, exp)
        }
        _ => return None,
    };
    // value * 1000 (milli) = mantissa * 2^bin * 10^(dec + 3 - frac_len)
    let mut v = mantissa.checked_mul(1i128.checked_shl(bin)?)?;
    let pow = dec + 3 - frac_len;
    if pow >= 0 {
        v = v.checked_mul(10i128.checked_pow(pow as u32)?)?;
    } else {
        // Below a milli-unit: round up, as Kubernetes rounds requests up.
        let div = 10i128.checked_pow((-pow) as u32)?;
        v = (v + div - 1) / div;
    }
    Some(Quantity(sign * v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_quantities_parse() {
        assert_eq!(parse("100m"), Some(Quantity(100)));
        assert_eq!(parse("1"), Some(Quantity(1000)));
        assert_eq!(parse("1.5"), Some(Quantity(1500)));
        assert_eq!(parse("1Gi").unwrap().ceil_units(), 1 << 30);
        assert_eq!(parse("128Mi").unwrap().ceil_units(), 128 << 20);
        assert_eq!(parse("2e3").unwrap().ceil_units(), 2000);
        assert_eq!(parse("1k").unwrap().ceil_units(), 1000);
        assert_eq!(parse("500M").unwrap().ceil_units(), 500_000_000);
    }

    #[test]
    fn garbage_does_not_parse() {
        for bad in ["", "lots", "1.2.3", "Gi", "1Gb", "1 Gi", ".", "--1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn quantities_with_surrounding_spaces_are_refused() {
        for bad in ["1Gi ", " 1Gi", "1 Gi", "\t100m"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse("1Gi").is_some());
    }
}
