//! Tollgate's ledger: the `tollgate_ocs::Ledger` trait on PostgreSQL and on SQLite (the
//! embedded default), with group commit, embedded migrations, the operator commands and
//! `ledger verify`.
//!
//! Layout: [`store`] connects (`postgres://…` / `sqlite://…`, one `sqlx::AnyPool`) and migrates
//! (`migrations/{postgres,sqlite}`); `batch` applies a batch of operations on either store:
//! lock its accounts, load the snapshot the money engine (`tollgate_ocs::engine`) decides on,
//! write the rows it decided (idempotency records, reservations, entries, cached sums,
//! charging records) set-based; the naive one-transaction-per-op baseline is a batch of one;
//! `rows` the rows read in several places; [`catalog`] the tariffs and Subscription-Id map
//! cached in the process, invalidated across processes by a version the database bumps; [`sql_ledger`]
//! is the group-commit batcher and the `Ledger` impl; [`admin`] holds account/tariff
//! provisioning and `verify`; [`cli`] the clap subcommands the root binary mounts. The schema
//! and its invariants are documented for auditors in docs/ledger.md.
#![forbid(unsafe_code)]

pub mod admin;
mod batch;
pub mod catalog;
pub mod cli;
mod rows;
pub mod session_requests;
pub mod sql_ledger;
pub mod store;

pub use sql_ledger::{BatchConfig, LedgerConfig, SqlLedger};
pub use store::{Database, Dialect, PoolConfig};
pub use tollgate_ocs::engine::{Op, OpOutcome};

/// Connecting, migrating, or running SQL failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad database URL {0:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH")]
    BadUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// Errors of the operator commands; each prints as one line saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Amount(#[from] tollgate_ocs::AmountError),
    #[error("{0}")]
    Subscription(#[from] tollgate_ocs::subscription::SubscriptionParseError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("ledger verify found {0} inconsistencies")]
    Inconsistent(usize),
}
