//! What the operator chooses about credit-control answers (RFC 4006 §5, §8).

use tollgate_codec::ResultCode;

#[derive(Clone, Debug)]
pub struct CcConfig {
    pub origin_host: String,
    pub origin_realm: String,
    /// Validity-Time sent with every grant (RFC 4006 §8.33), seconds.
    pub validity_time_s: u32,
    /// A reservation not reported by CCR-U/T within `validity_time_s × tcc_factor` is
    /// released by the sweeper (RFC 4006 §7 Tcc; docs/protocol.md, "Server session and Tcc"
    /// suggests 2).
    pub tcc_factor: u32,
    /// Credit-Control-Failure-Handling to send (RFC 4006 §8.14); None sends nothing, which
    /// clients read as TERMINATE.
    pub credit_control_failure_handling: Option<i32>,
    /// Direct-Debiting-Failure-Handling to send on EVENT answers (§8.15).
    pub direct_debiting_failure_handling: Option<i32>,
    /// CC-Session-Failover to send (§8.4): SUPPORTED (1) is honest when several nodes share
    /// one PostgreSQL ledger.
    pub cc_session_failover: Option<i32>,
    /// Send Cost-Information on TERMINATION and EVENT answers (and Remaining-Balance).
    pub cost_information: bool,
    /// What a ledger failure is answered with: 5012 UNABLE_TO_COMPLY (client applies CCFH)
    /// or 3004 TOO_BUSY (client may fail over to another server).
    pub store_failure_result: ResultCode,
    /// The most usage one report (a Used-Service-Unit) is charged for, per unit type. A
    /// client that reports more (one once reported 71 million seconds for one call) is charged
    /// this much, answered normally, and logged and counted (`app.rs`, `capped`).
    pub max_reported_usage: UsageCaps,
}

/// Per-report usage caps (`CcConfig::max_reported_usage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageCaps {
    pub seconds: u64,
    pub octets: u64,
    pub units: u64,
    /// Minor units of the account's currency.
    pub money: u64,
}

impl Default for UsageCaps {
    /// A day of time, 100 GiB, a million service units, and 1,000,000.00 in money: well
    /// above what one report of a real session carries, and far below what would overflow.
    fn default() -> Self {
        UsageCaps {
            seconds: 86_400,
            octets: 100 << 30,
            units: 1_000_000,
            money: 100_000_000,
        }
    }
}

impl UsageCaps {
    pub fn cap(&self, unit: tollgate_ocs::UnitType) -> u64 {
        use tollgate_ocs::UnitType;
        match unit {
            UnitType::Seconds => self.seconds,
            UnitType::Octets => self.octets,
            UnitType::Units => self.units,
            UnitType::Money => self.money,
        }
    }
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig {
            origin_host: "tollgate.localdomain".into(),
            origin_realm: "localdomain".into(),
            validity_time_s: 300,
            tcc_factor: 2,
            credit_control_failure_handling: None,
            direct_debiting_failure_handling: None,
            cc_session_failover: None,
            cost_information: true,
            store_failure_result: ResultCode::UNABLE_TO_COMPLY,
            max_reported_usage: UsageCaps::default(),
        }
    }
}
