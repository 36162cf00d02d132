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
