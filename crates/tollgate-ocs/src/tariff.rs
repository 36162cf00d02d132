//! Tariffs and rating. A tariff prices one unit type for one service key; rating turns
//! requested units into a grant (quantum, minimum grant, what the balance affords) and used
//! units into a charge. Arithmetic is integer (i128 intermediates) and rounds *up* when a price
//! is finer than the minor unit: a charge is never below the exact price (documented in
//! docs/ledger.md, "Policies").

use crate::error::Refusal;
use crate::money::{split_decimal, AmountError, Money};
use crate::units::UnitType;
use serde::{Deserialize, Serialize};

/// What is being charged for: Service-Context-Id (461) plus, for MSCC, Rating-Group (432) or
/// Service-Identifier (439). Tariff lookup prefers a Service-Identifier match, then the
/// Rating-Group, then the context-wide tariff (both absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub service_context: String,
    pub rating_group: Option<u32>,
    pub service_id: Option<u32>,
}

impl ServiceKey {
    pub fn context(service_context: impl Into<String>) -> Self {
        ServiceKey {
            service_context: service_context.into(),
            rating_group: None,
            service_id: None,
        }
    }
    pub fn with_rating_group(mut self, rg: u32) -> Self {
        self.rating_group = Some(rg);
        self
    }
    pub fn with_service_id(mut self, sid: u32) -> Self {
        self.service_id = Some(sid);
        self
    }

    /// The Service-Context-Id values a tariff may name to price this key, most specific first:
    /// see [`tariff_contexts`].
    pub fn tariff_contexts(&self) -> impl Iterator<Item = &str> {
        tariff_contexts(&self.service_context)
    }
}

/// Most labels a Service-Context-Id may drop to reach the tariff that prices it: TS 32.299
/// §7.1.12 prefixes at most four (extension, MNC, MCC, release).
const MAX_CONTEXT_PREFIX_LABELS: usize = 4;

/// The Service-Context-Id values whose tariff may price a request for `service_context`, most
/// specific first: the id itself, then its standard suffixes.
///
/// TS 32.299 §7.1.12 builds the id as `[<extension>.]<MNC>.<MCC>.<release>.<service-context>@<domain>`
/// (Kamailio sends `ext.01.001.8.32260@3gpp.org` for IMS), and the operator prices the service
/// (`32260@3gpp.org`), not each network and release. So the leading dot-separated labels of the
/// part before `@` are dropped one at a time, at most four; every candidate keeps its `@` and
/// domain. An id without `@` has no suffixes. The rule for choosing among tariffs: the most
/// specific context that has an applicable tariff wins, then Service-Identifier over
/// Rating-Group over context-wide within it (README "Charging").
pub fn tariff_contexts(service_context: &str) -> impl Iterator<Item = &str> {
    let local_end = service_context.find('@').unwrap_or(0);
    let suffixes = service_context[..local_end]
        .match_indices('.')
        .take(MAX_CONTEXT_PREFIX_LABELS)
        .map(move |(dot, _)| &service_context[dot + 1..])
        .filter(|suffix| !suffix.starts_with('@'));
    std::iter::once(service_context).chain(suffixes)
}

/// A price as a fraction: `minor` minor units per `per_units` units, so prices finer than one
/// minor unit (0.000001 EUR per octet) stay exact: 1 minor per 10 000 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Price {
    pub minor: i64,
    pub per_units: i64,
}

impl Price {
    /// Parse a decimal price per unit in a currency of `scale` decimals ("0.01" EUR → 1/1).
    pub fn parse(input: &str, scale: u8) -> Result<Price, AmountError> {
        let (digits, frac_len) = split_decimal(input)?;
        if digits < 0 {
            return Err(AmountError::Syntax {
                input: input.to_string(),
            });
        }
        let overflow = || AmountError::Overflow {
            input: input.to_string(),
        };
        let (mut minor, mut per) = if frac_len <= scale as u32 {
            (digits * 10i128.pow(scale as u32 - frac_len), 1i128)
        } else {
            (digits, 10i128.pow(frac_len - scale as u32))
        };
        let g = gcd(minor, per);
        if g > 1 {
            minor /= g;
            per /= g;
        }
        Ok(Price {
            minor: i64::try_from(minor).map_err(|_| overflow())?,
            per_units: i64::try_from(per).map_err(|_| overflow())?,
        })
    }

    /// Charge for `units`, rounded up to a whole minor unit. `None` on overflow.
    pub fn amount_for(self, units: u64) -> Option<Money> {
        if self.per_units <= 0 {
            return None;
        }
        let num = i128::from(units) * i128::from(self.minor);
        let per = i128::from(self.per_units);
        let v = (num + per - 1) / per;
        i64::try_from(v).ok().map(Money)
    }

    /// How many units `budget` minor units pay for (rounded down). Free → `u64::MAX`.
    pub fn units_for(self, budget: Money) -> u64 {
        if self.minor <= 0 {
            return u64::MAX;
        }
        if budget.0 <= 0 {
            return 0;
        }
        let v = i128::from(budget.0) * i128::from(self.per_units) / i128::from(self.minor);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// Back to a decimal string in a currency of `scale` decimals.
    pub fn to_decimal(self, scale: u8) -> String {
        // minor/per_units minor units = minor * 10^-scale / per_units major units.
        let mut per = self.per_units as i128;
        let mut extra = 0u32;
        let mut num = self.minor as i128;
        while per % 10 == 0 && per > 1 {
            per /= 10;
            extra += 1;
        }
        if per != 1 {
            return format!("{}/{} minor", self.minor, self.per_units);
        }
        let decimals = scale as u32 + extra;
        if decimals == 0 {
            return num.to_string();
        }
        let p = 10i128.pow(decimals);
        let int = num / p;
        num %= p;
        format!("{int}.{num:0width$}", width = decimals as usize)
    }
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a.abs()
}

/// A price for one unit type of one service key, with its grant policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub service: ServiceKey,
    pub unit: UnitType,
    /// ISO 4217 code the price is expressed in; an account in another currency has no tariff.
    pub currency: String,
    pub price: Price,
    /// Units granted when the request names none (empty Requested-Service-Unit, RFC 4006 §8.18).
    pub quantum: u64,
    /// A grant below this is refused with CREDIT_LIMIT_REACHED (4012) instead of granted.
    pub min_grant: u64,
    /// How the client is to use up a grant; sent with every grant under this tariff.
    pub quota: QuotaPolicy,
    /// What the client does once a final grant is used up (Final-Unit-Indication).
    pub final_unit: FinalUnitPolicy,
}

/// What the client does when the final units are used up (RFC 4006 §5.6, §8.35): end the
/// service, redirect it (to a top-up page), or restrict it to what a filter allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum FinalUnitPolicy {
    /// Final-Unit-Action TERMINATE (0).
    #[default]
    Terminate,
    /// REDIRECT (1) to `address`: a URL, a SIP URI, or an IPv4 or IPv6 address.
    Redirect { address: String },
    /// RESTRICT_ACCESS (2) to what the client's filter `filter_id` lets through.
    RestrictAccess { filter_id: String },
}

impl FinalUnitPolicy {
    pub fn is_terminate(&self) -> bool {
        *self == FinalUnitPolicy::Terminate
    }

    /// Final-Unit-Action (RFC 4006 §8.35).
    pub fn action(&self) -> i32 {
        match self {
            FinalUnitPolicy::Terminate => 0,
            FinalUnitPolicy::Redirect { .. } => 1,
            FinalUnitPolicy::RestrictAccess { .. } => 2,
        }
    }

    /// Redirect-Address-Type (RFC 4006 §8.38) of a redirect address: IPv4 0, IPv6 1, URL 2,
    /// SIP URI 3; None for anything else, which is refused when the tariff is set.
    pub fn redirect_address_type(address: &str) -> Option<i32> {
        if address.parse::<std::net::Ipv4Addr>().is_ok() {
            Some(0)
        } else if address.parse::<std::net::Ipv6Addr>().is_ok() {
            Some(1)
        } else if address.starts_with("sip:") || address.starts_with("sips:") {
            Some(3)
        } else if address.contains("://") {
            Some(2)
        } else {
            None
        }
    }
}

/// How a client is to use up a grant (TS 32.299 §7.2: Time-, Volume- and
/// Unit-Quota-Threshold, Quota-Holding-Time, Quota-Consumption-Time). Each is optional; none
/// is sent when unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotaPolicy {
    /// Ask again when this much of the grant is left, in the tariff's unit (sent as the
    /// Quota-Threshold of that unit: Time-, Volume- or Unit-).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// Seconds without traffic after which the client reports and gives the quota back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_time_s: Option<u32>,
    /// Seconds of idle time still counted as use after traffic stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_time_s: Option<u32>,
    /// Validity-Time of a grant (RFC 4006 §8.33), seconds, in place of the server's
    /// `validity_time_s`; the reservation's Tcc follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_time_s: Option<u32>,
}

impl QuotaPolicy {
    pub fn is_empty(&self) -> bool {
        *self == QuotaPolicy::default()
    }
}

/// The outcome of rating a request against what the subscriber can spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantPlan {
    /// Total units granted (allowance + paid).
    pub units: u64,
    /// Units taken from a free allowance (used before money).
    pub allowance_units: u64,
    /// Money reserved for the paid part.
    pub amount: Money,
    /// The grant takes everything the subscriber has left (Final-Unit-Indication).
    pub final_grant: bool,
}

impl Tariff {
    /// Rate a grant. `allowance_free`: units of an allowance not yet reserved; `available`:
    /// money above the credit floor not yet reserved.
    pub fn plan_grant(
        &self,
        requested: Option<u64>,
        allowance_free: u64,
        available: Money,
    ) -> Result<GrantPlan, Refusal> {
        let requested = requested.unwrap_or(self.quantum);
        let allowance_units = requested.min(allowance_free);
        let remaining = requested - allowance_units;
        let affordable = self.price.units_for(available);
        let money_units = remaining.min(affordable);
        let amount = self
            .price
            .amount_for(money_units)
            .ok_or(Refusal::CreditLimitReached)?;
        let units = allowance_units + money_units;
        if requested > 0 && (units == 0 || units < self.min_grant.min(requested)) {
            return Err(Refusal::CreditLimitReached);
        }
        let final_grant =
            self.price.minor > 0 && money_units == affordable && allowance_units == allowance_free;
        Ok(GrantPlan {
            units,
            allowance_units,
            amount,
            final_grant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tariff_contexts_run_from_the_full_id_to_the_service() {
        fn all(id: &str) -> Vec<&str> {
            tariff_contexts(id).collect()
        }
        assert_eq!(
            all("ext.01.001.8.32260@3gpp.org"),
            [
                "ext.01.001.8.32260@3gpp.org",
                "01.001.8.32260@3gpp.org",
                "001.8.32260@3gpp.org",
                "8.32260@3gpp.org",
                "32260@3gpp.org"
            ]
        );
        assert_eq!(all("32251@3gpp.org"), ["32251@3gpp.org"]);
        assert_eq!(
            all("10.32260@3gpp.org"),
            ["10.32260@3gpp.org", "32260@3gpp.org"]
        );
        // No @: not a TS 32.299 id, so no suffixes; dots after @ are the domain's.
        assert_eq!(all("a.b.c"), ["a.b.c"]);
        assert_eq!(all("x@a.b"), ["x@a.b"]);
        // At most four labels dropped; never a bare @domain.
        assert_eq!(all("a.b.c.d.e.f@x").last(), Some(&"e.f@x"));
        assert_eq!(all("a.@x"), ["a.@x"]);
        assert_eq!(
            ServiceKey::context("8.32260@3gpp.org")
                .with_rating_group(1)
                .tariff_contexts()
                .collect::<Vec<_>>(),
            ["8.32260@3gpp.org", "32260@3gpp.org"]
        );
    }

    fn tariff(price: &str, quantum: u64, min_grant: u64) -> Tariff {
        Tariff {
            service: ServiceKey::context("32260@3gpp.org"),
            unit: UnitType::Seconds,
            currency: "EUR".into(),
            price: Price::parse(price, 2).expect("price"),
            quantum,
            min_grant,
            quota: QuotaPolicy::default(),
            final_unit: FinalUnitPolicy::Terminate,
        }
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(
            Price::parse("0.01", 2),
            Ok(Price {
                minor: 1,
                per_units: 1
            })
        );
        assert_eq!(
            Price::parse("0.000001", 2),
            Ok(Price {
                minor: 1,
                per_units: 10_000
            })
        );
        assert_eq!(
            Price::parse("0.015", 2),
            Ok(Price {
                minor: 3,
                per_units: 2
            })
        );
        assert_eq!(
            Price::parse("0.000001", 2).map(|p| p.to_decimal(2)),
            Ok("0.000001".into())
        );
        assert_eq!(
            Price::parse("1.5", 2).map(|p| p.to_decimal(2)),
            Ok("1.50".into())
        );
        let p = Price::parse("0.015", 2).expect("price");
        assert_eq!(p.amount_for(3), Some(Money(5))); // 4.5 rounds up
        assert_eq!(p.units_for(Money(5)), 3);
    }

    #[test]
    fn grants_follow_balance_and_minimum() {
        let t = tariff("0.01", 60, 10);
        let g = t.plan_grant(None, 0, Money(1000)).expect("grant");
        assert_eq!((g.units, g.amount, g.final_grant), (60, Money(60), false));
        let g = t.plan_grant(Some(100), 0, Money(30)).expect("grant");
        assert_eq!((g.units, g.amount, g.final_grant), (30, Money(30), true));
        assert_eq!(
            t.plan_grant(Some(100), 0, Money(5)),
            Err(Refusal::CreditLimitReached)
        );
        let g = t.plan_grant(Some(100), 80, Money(0)).expect("grant");
        assert_eq!((g.units, g.allowance_units, g.amount), (80, 80, Money(0)));
        let g = t.plan_grant(Some(50), 80, Money(0)).expect("grant");
        assert_eq!((g.units, g.allowance_units, g.final_grant), (50, 50, false));
    }
}
