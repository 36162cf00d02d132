//! Integer money (docs/architecture.md, "Integer money and unit names"): an amount is an
//! `i64` of minor units; the currency says how many decimal places one major unit has. Floats
//! never appear.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in minor units of the account's currency (cents for EUR). Signed: ledger entries
/// carry debits as negative amounts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);
    pub fn minor(self) -> i64 {
        self.0
    }
    /// Render with the currency's scale: `Money(1050)` in EUR → `"10.50"`.
    pub fn to_decimal(self, scale: u8) -> String {
        format_minor(self.0, scale)
    }
}

/// ISO 4217 alphabetic code plus the number of decimals of its minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency {
    pub code: String,
    pub scale: u8,
}

impl Currency {
    /// Accepts a 3-letter code; the scale comes from ISO 4217 for the currencies that are not
    /// 2-decimal, and is 2 otherwise.
    pub fn parse(code: &str) -> Result<Currency, AmountError> {
        let code = code.trim().to_ascii_uppercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(AmountError::BadCurrency(code));
        }
        let scale = match code.as_str() {
            "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "XAF" | "XOF" | "UGX" | "PYG" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "IQD" | "LYD" => 3,
            _ => 2,
        };
        Ok(Currency { code, scale })
    }
    /// ISO 4217 numeric code for the Currency-Code AVP (RFC 4006 §8.11), where known.
    pub fn numeric(&self) -> Option<u32> {
        Some(match self.code.as_str() {
            "EUR" => 978,
            "USD" => 840,
            "GBP" => 826,
            "JPY" => 392,
            "CHF" => 756,
            "SEK" => 752,
            "NOK" => 578,
            "DKK" => 208,
            "PLN" => 985,
            _ => return None,
        })
    }
    pub fn parse_amount(&self, s: &str) -> Result<Money, AmountError> {
        parse_decimal(s, self.scale).map(Money)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("bad amount {input:?}: write a decimal like 10.00 (digits, one optional '.', optional leading '-')")]
    Syntax { input: String },
    #[error("bad amount {input:?}: at most {scale} decimal places for this currency")]
    TooPrecise { input: String, scale: u8 },
    #[error("bad amount {input:?}: too large")]
    Overflow { input: String },
    #[error("bad currency {0:?}: use a 3-letter ISO 4217 code such as EUR")]
    BadCurrency(String),
}

/// Parse `"10.5"` with scale 2 into 1050 minor units. More decimals than the scale is an error
/// (rounding money silently would invent or lose it).
pub fn parse_decimal(input: &str, scale: u8) -> Result<i64, AmountError> {
    let (digits, frac_len) = split_decimal(input)?;
    if frac_len > scale as u32 {
        // Allow trailing zeros beyond the scale ("10.000" for EUR).
        let excess = frac_len - scale as u32;
        let div = 10i128.pow(excess);
        if digits % div != 0 {
            return Err(AmountError::TooPrecise {
                input: input.to_string(),
                scale,
            });
        }
        return i64::try_from(digits / div).map_err(|_| AmountError::Overflow {
            input: input.to_string(),
        });
    }
    let v = digits
        .checked_mul(10i128.pow(scale as u32 - frac_len))
        .ok_or_else(|| AmountError::Overflow {
            input: input.to_string(),
        })?;
    i64::try_from(v).map_err(|_| AmountError::Overflow {
        input: input.to_string(),
    })
}

/// Split a decimal string into its integer digits (sign applied) and the count of fraction
/// digits: `"-1.25"` → `(-125, 2)`.
pub(crate) fn split_decimal(input: &str) -> Result<(i128, u32), AmountError> {
    let syntax = || AmountError::Syntax {
        input: input.to_string(),
    };
    let s = input.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(syntax());
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(syntax());
    }
    if int_part.len() + frac_part.len() > 30 {
        return Err(AmountError::Overflow {
            input: input.to_string(),
        });
    }
    let mut v: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        v = v * 10 + i128::from(b - b'0');
    }
    Ok((if neg { -v } else { v }, frac_part.len() as u32))
}

/// Render minor units with `scale` decimals: `format_minor(-5, 2)` → `"-0.05"`.
pub fn format_minor(minor: i64, scale: u8) -> String {
    if scale == 0 {
        return minor.to_string();
    }
    let neg = minor < 0;
    let abs = minor.unsigned_abs();
    let p = 10u64.pow(scale as u32);
    format!(
        "{}{}.{:0width$}",
        if neg { "-" } else { "" },
        abs / p,
        abs % p,
        width = scale as usize
    )
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} minor units", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_decimal("10.00", 2), Ok(1000));
        assert_eq!(parse_decimal("10.5", 2), Ok(1050));
        assert_eq!(parse_decimal("7", 2), Ok(700));
        assert_eq!(parse_decimal("-0.05", 2), Ok(-5));
        assert_eq!(parse_decimal("1.230", 2), Ok(123));
        assert!(matches!(
            parse_decimal("1.234", 2),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_decimal("1,00", 2),
            Err(AmountError::Syntax { .. })
        ));
        assert!(matches!(
            parse_decimal("", 2),
            Err(AmountError::Syntax { .. })
        ));
        assert!(matches!(
            parse_decimal("99999999999999999999", 2),
            Err(AmountError::Overflow { .. })
        ));
        assert_eq!(format_minor(1050, 2), "10.50");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(12, 0), "12");
        assert_eq!(Currency::parse("eur").map(|c| c.scale), Ok(2));
        assert_eq!(Currency::parse("JPY").map(|c| c.scale), Ok(0));
        assert!(Currency::parse("EURO").is_err());
    }
}
