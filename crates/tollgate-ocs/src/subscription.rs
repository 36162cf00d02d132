//! Subscription-Id (RFC 4006 §8.46, types §8.47) and its provisioning text form
//! (`e164:15550000001`, docs/architecture.md, "The operator's surface").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SubscriptionType {
    E164 = 0,
    Imsi = 1,
    SipUri = 2,
    Nai = 3,
    Private = 4,
}

impl SubscriptionType {
    /// Subscription-Id-Type (450) value.
    pub fn code(self) -> i16 {
        self as i16
    }
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => SubscriptionType::E164,
            1 => SubscriptionType::Imsi,
            2 => SubscriptionType::SipUri,
            3 => SubscriptionType::Nai,
            4 => SubscriptionType::Private,
            _ => return None,
        })
    }
    pub fn prefix(self) -> &'static str {
        match self {
            SubscriptionType::E164 => "e164",
            SubscriptionType::Imsi => "imsi",
            SubscriptionType::SipUri => "sip",
            SubscriptionType::Nai => "nai",
            SubscriptionType::Private => "private",
        }
    }
}

/// A subscriber as the network names it: Subscription-Id-Type + Subscription-Id-Data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubscriptionId {
    pub kind: SubscriptionType,
    pub data: String,
}

impl SubscriptionId {
    /// A subscription as it arrives (Subscription-Id-Data) or is stored. E.164 numbers are
    /// kept one way, digits only ([`normalize_e164`]); anything else is kept as it is.
    pub fn new(kind: SubscriptionType, data: impl Into<String>) -> Self {
        let data = data.into();
        let data = match kind {
            // Most numbers arrive as digits already: keep them without a copy.
            SubscriptionType::E164 if !is_stored_e164(&data) => {
                normalize_e164(&data).unwrap_or(data)
            }
            _ => data,
        };
        SubscriptionId { kind, data }
    }
    pub fn e164(msisdn: impl Into<String>) -> Self {
        Self::new(SubscriptionType::E164, msisdn)
    }
}

/// Already the stored form of [`normalize_e164`].
fn is_stored_e164(text: &str) -> bool {
    (1..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// An E.164 number as Tollgate stores and matches it: its digits alone, `None` when the text is
/// not a number.
///
/// RFC 4006 §8.47 asks for END_USER_E164 "in international E.164 format", which is digits
/// (ITU-T E.164 §6), but deployed clients send the `+` of the international prefix: Kamailio's
/// ims_charging copies it from a `tel:+…` URI. Operators also write numbers with the visual
/// separators of ITU-T E.123 §7 (spaces, hyphens, dots, parentheses). So one leading `+` and
/// those separators are dropped, and at most 15 digits (E.164 §6.1) must remain.
pub fn normalize_e164(text: &str) -> Option<String> {
    let body = text.trim();
    let body = body.strip_prefix('+').unwrap_or(body);
    let mut digits = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    is_stored_e164(&digits).then_some(digits)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad subscription {0:?}: write e164:DIGITS (a leading + and spaces, dots, hyphens or parentheses are accepted), imsi:DIGITS, sip:USER@HOST, nai:USER@REALM or private:ID")]
pub struct SubscriptionParseError(pub String);

impl FromStr for SubscriptionId {
    type Err = SubscriptionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SubscriptionParseError(s.to_string());
        let (prefix, data) = s.split_once(':').ok_or_else(err)?;
        let kind = match prefix.to_ascii_lowercase().as_str() {
            "e164" => SubscriptionType::E164,
            "imsi" => SubscriptionType::Imsi,
            "sip" => SubscriptionType::SipUri,
            "nai" => SubscriptionType::Nai,
            "private" => SubscriptionType::Private,
            _ => return Err(err()),
        };
        if data.is_empty() || data.len() > 256 || data.chars().any(|c| c.is_control()) {
            return Err(err());
        }
        if kind == SubscriptionType::Imsi && !data.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let data = match kind {
            SubscriptionType::E164 => normalize_e164(data).ok_or_else(err)?,
            // For SIP URIs the stored data is the full URI, as it travels in
            // Subscription-Id-Data.
            SubscriptionType::SipUri => format!("sip:{data}"),
            _ => data.to_string(),
        };
        Ok(SubscriptionId { kind, data })
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SubscriptionType::SipUri => f.write_str(&self.data),
            k => write!(f, "{}:{}", k.prefix(), self.data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "e164:15550000001",
            "imsi:001010000000001",
            "sip:alice@example.com",
            "nai:bob@realm",
            "private:x-1",
        ] {
            let id: SubscriptionId = s.parse().expect("parses");
            assert_eq!(id.to_string(), s);
        }
        let sip: SubscriptionId = "sip:alice@example.com".parse().expect("parses");
        assert_eq!(sip.kind.code(), 2);
        assert_eq!(sip.data, "sip:alice@example.com");
        assert!("e164:12a".parse::<SubscriptionId>().is_err());
        assert!("tel:1".parse::<SubscriptionId>().is_err());
        assert!("e164:".parse::<SubscriptionId>().is_err());
    }

    #[test]
    fn e164_numbers_are_stored_as_digits() {
        for s in [
            "e164:+15550000001",
            "e164:15550000001",
            "e164:+1 555 000 0001",
            "e164:+1 (555) 000-0001",
            "e164:1.555.000.0001",
        ] {
            let id: SubscriptionId = s.parse().expect(s);
            assert_eq!(id.data, "15550000001", "{s}");
            assert_eq!(id.to_string(), "e164:15550000001");
        }
        // As a CCR carries it (Kamailio keeps the + of tel:+…).
        assert_eq!(
            SubscriptionId::new(SubscriptionType::E164, "+15550000001"),
            SubscriptionId::e164("15550000001")
        );
        // Not a number: kept as sent (it matches no account), refused on the command line.
        assert_eq!(
            SubscriptionId::new(SubscriptionType::E164, "alice").data,
            "alice"
        );
        for bad in [
            "e164:++15550000001",
            "e164:+",
            "e164:1555x",
            "e164:1234567890123456",
            "e164:tel:+1555",
        ] {
            assert!(bad.parse::<SubscriptionId>().is_err(), "{bad}");
        }
        // Other kinds are untouched.
        assert_eq!(
            SubscriptionId::new(SubscriptionType::Nai, "+1 a").data,
            "+1 a"
        );
    }
}
