//! Tollgate's charging domain: what a charge *is*, independent of Diameter and of SQL.
//!
//! Layout: [`money`] holds integer money (minor units + a currency with its scale) and decimal
//! parsing; [`units`] the unit types a grant can be expressed in (RFC 4006 §8.32 CC-Unit-Type);
//! [`subscription`] the Subscription-Id (RFC 4006 §8.46) and its `e164:`/`imsi:`/… text form;
//! [`tariff`] service keys, prices and rating (quantum, minimum grant); [`clock`] the `Clock` trait
//! (docs/architecture.md, "Time is an input"); [`ledger`] the `Ledger` trait with its request and
//! outcome types (docs/architecture.md, "The two-phase money model"); [`error`] the crate's error
//! enum, each variant knowing the Result-Code it becomes (docs/architecture.md, "Errors choose the
//! answer"); [`engine`] every money decision of the ledger (reserve, post, release, direct debit,
//! refund, with idempotency), applied to a snapshot the store loads and returning the rows it
//! writes.
//!
//! No SQL and no Diameter live here: `tollgate-ledger` implements [`Ledger`] on databases and
//! `tollgate-cc` maps CCRs onto it.
#![forbid(unsafe_code)]

pub mod clock;
pub mod engine;
pub mod error;
pub mod ledger;
pub mod money;
pub mod subscription;
pub mod tariff;
pub mod units;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{LedgerError, Refusal};
pub use ledger::*;
pub use money::{AmountError, Currency, Money};
pub use subscription::{normalize_e164, SubscriptionId, SubscriptionType};
pub use tariff::{tariff_contexts, FinalUnitPolicy, Price, QuotaPolicy, ServiceKey, Tariff};
pub use units::{Octets, Seconds, ServiceUnits, UnitType, UsedUnits};
