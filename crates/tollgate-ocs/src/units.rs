//! Unit types a grant or a usage report is expressed in (RFC 4006 §8.32 CC-Unit-Type,
//! restricted to what Tollgate rates: time, total octets, service-specific units, money).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum UnitType {
    /// CC-Time (420), seconds.
    Seconds,
    /// CC-Total-Octets (421).
    Octets,
    /// CC-Service-Specific-Units (417): events, messages, points.
    Units,
    /// CC-Money (413), in minor units of the account's currency.
    Money,
}

impl UnitType {
    pub const ALL: [UnitType; 4] = [
        UnitType::Seconds,
        UnitType::Octets,
        UnitType::Units,
        UnitType::Money,
    ];

    /// The spelling used in the schema (`unit` columns) and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitType::Seconds => "seconds",
            UnitType::Octets => "octets",
            UnitType::Units => "units",
            UnitType::Money => "money",
        }
    }
    /// RFC 4006 §8.32 CC-Unit-Type value.
    pub fn cc_unit_type(self) -> u32 {
        match self {
            UnitType::Seconds => 0,
            UnitType::Money => 1,
            UnitType::Octets => 2,
            UnitType::Units => 5,
        }
    }
}

impl fmt::Display for UnitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown unit {0:?}: use seconds, octets, units or money")]
pub struct UnknownUnit(pub String);

impl FromStr for UnitType {
    type Err = UnknownUnit;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seconds" | "time" => Ok(UnitType::Seconds),
            "octets" => Ok(UnitType::Octets),
            "units" | "service-units" => Ok(UnitType::Units),
            "money" => Ok(UnitType::Money),
            other => Err(UnknownUnit(other.to_string())),
        }
    }
}

/// Usage as a client reports it: an amount per unit type. RFC 4006 §8.19 lets one
/// Used-Service-Unit carry several (Open5GS's SMF reports CC-Time, CC-Input-Octets and
/// CC-Output-Octets together); the ledger charges the amount in the unit of the reservation
/// being committed, and counts the others as not charged for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsedUnits {
    pub seconds: Option<u64>,
    pub octets: Option<u64>,
    pub units: Option<u64>,
    pub money: Option<u64>,
}

impl UsedUnits {
    /// A report in one unit type.
    pub fn of(unit: UnitType, amount: u64) -> Self {
        let mut u = UsedUnits::default();
        *u.slot(unit) = Some(amount);
        u
    }

    /// The amount reported in `unit`, if any.
    pub fn amount(&self, unit: UnitType) -> Option<u64> {
        match unit {
            UnitType::Seconds => self.seconds,
            UnitType::Octets => self.octets,
            UnitType::Units => self.units,
            UnitType::Money => self.money,
        }
    }

    /// What the ledger charges against a reservation in `unit`: the amount in that unit, or
    /// none of it when the report names other units only.
    pub fn charged_in(&self, unit: UnitType) -> u64 {
        self.amount(unit).unwrap_or(0)
    }

    /// Adds `amount` in `unit` (several Used-Service-Unit AVPs of one request add up).
    pub fn add(&mut self, unit: UnitType, amount: u64) {
        let slot = self.slot(unit);
        *slot = Some(slot.unwrap_or(0).saturating_add(amount));
    }

    /// The same report with `unit`'s amount set to `amount`.
    pub fn with(mut self, unit: UnitType, amount: u64) -> Self {
        *self.slot(unit) = Some(amount);
        self
    }

    /// Adds every amount of `other`.
    pub fn add_all(&mut self, other: &UsedUnits) {
        for unit in UnitType::ALL {
            if let Some(a) = other.amount(unit) {
                self.add(unit, a);
            }
        }
    }

    /// The unit types reported, in [`UnitType::ALL`] order.
    pub fn reported(&self) -> impl Iterator<Item = UnitType> + '_ {
        UnitType::ALL
            .into_iter()
            .filter(|u| self.amount(*u).is_some())
    }

    fn slot(&mut self, unit: UnitType) -> &mut Option<u64> {
        match unit {
            UnitType::Seconds => &mut self.seconds,
            UnitType::Octets => &mut self.octets,
            UnitType::Units => &mut self.units,
            UnitType::Money => &mut self.money,
        }
    }
}

/// Typed quantities for callers that want the unit in the type; the ledger API itself carries
/// `(UnitType, u64)` because the unit is chosen by the tariff at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seconds(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Octets(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceUnits(pub u64);

impl From<Seconds> for (UnitType, u64) {
    fn from(v: Seconds) -> Self {
        (UnitType::Seconds, v.0)
    }
}
impl From<Octets> for (UnitType, u64) {
    fn from(v: Octets) -> Self {
        (UnitType::Octets, v.0)
    }
}
impl From<ServiceUnits> for (UnitType, u64) {
    fn from(v: ServiceUnits) -> Self {
        (UnitType::Units, v.0)
    }
}
