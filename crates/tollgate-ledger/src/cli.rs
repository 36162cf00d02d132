//! The operator subcommands (docs/architecture.md, "The operator's surface": `migrate`, `account`,
//! `tariff`, `ledger verify`) as clap-derive structs plus async `run` functions. The root binary
//! mounts these and owns `main`; each `run` returns a result it turns into the exit code (`ledger
//! verify` returns `AdminError::Inconsistent` on any mismatch → exit 1).

use crate::admin::{self, AccountStatus, AllowanceSpec, NewAccount, TariffSpec};
use crate::session_requests::{self, SessionRequestKind, SessionSelector};
use crate::store::{Database, PoolConfig};
use crate::AdminError;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::Path;
use tollgate_ocs::*;

/// The embedded store in the data directory: `sqlite://DATA_DIR/ledger.sqlite3`.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("ledger.sqlite3").display())
}

/// Default data directory (docs/architecture.md, "The operator's surface").
pub const DEFAULT_DATA_DIR: &str = "./tollgate-data";

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// postgres://… or sqlite://…; default: the embedded store in the data directory.
    #[arg(long, env = "TOLLGATE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Data directory holding the embedded store.
    #[arg(long, default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: std::path::PathBuf,
}

impl DatabaseArgs {
    pub fn url(&self) -> Result<String, AdminError> {
        match &self.database_url {
            Some(u) => Ok(u.clone()),
            None => {
                std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                    AdminError::Input(format!(
                        "cannot create data dir {}: {e}",
                        self.data_dir.display()
                    ))
                })?;
                Ok(default_database_url(&self.data_dir))
            }
        }
    }
    /// Connect and apply migrations (every command works on a fresh store).
    pub async fn open(&self) -> Result<Database, AdminError> {
        let db = Database::connect(
            &self.url()?,
            &PoolConfig {
                max_connections: 2,
                ..PoolConfig::default()
            },
        )
        .await?;
        db.migrate().await?;
        Ok(db)
    }
}

/// `tollgate migrate`
#[derive(Debug, Clone, Args)]
pub struct MigrateCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run_migrate(cmd: &MigrateCmd, out: &mut dyn Write) -> Result<(), AdminError> {
    let db = Database::connect(&cmd.db.url()?, &PoolConfig::default()).await?;
    db.migrate().await?;
    let _ = writeln!(out, "migrations applied");
    Ok(())
}

/// `tollgate account create|show|list|topup`
#[derive(Debug, Clone, Args)]
pub struct AccountCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub action: AccountAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AccountAction {
    /// Create an account with its subscriptions, opening balance and allowances.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Opening balance, a decimal in the currency ("10.00").
        #[arg(long, default_value = "0")]
        balance: String,
        /// How far below zero the balance may go ("0.00").
        #[arg(long, default_value = "0")]
        credit_limit: String,
        /// e164:N, imsi:N, sip:USER@HOST, nai:USER@REALM, private:ID (repeatable).
        #[arg(long = "subscription", required = true)]
        subscriptions: Vec<String>,
        /// Free units used before money: UNIT:COUNT:YYYY-MM-DD (repeatable).
        #[arg(long = "allowance")]
        allowances: Vec<String>,
    },
    /// Add money (a topup entry).
    Topup {
        #[arg(long)]
        id: String,
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
    },
    /// Refuse the account new grants (4010), and ask the clients of its open sessions to end
    /// them (Abort-Session-Request).
    Block {
        #[arg(long)]
        id: String,
    },
    /// Let a blocked account be granted again, and ask the clients of its open sessions to
    /// re-authorise (Re-Auth-Request).
    Unblock {
        #[arg(long)]
        id: String,
    },
    /// Close the account for good (like block, but it cannot be unblocked).
    Close {
        #[arg(long)]
        id: String,
    },
    /// Balance, reserved, available and allowances.
    Show {
        #[arg(long)]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// All accounts.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn print_balance(b: &Balance, json: bool, out: &mut dyn Write) {
    if json {
        let v = serde_json::json!({
            "id": b.account_id,
            "currency": b.currency,
            "balance": b.posted.to_decimal(b.scale),
            "reserved": b.reserved.to_decimal(b.scale),
            "available": b.available.to_decimal(b.scale),
            "credit_limit": b.credit_limit.to_decimal(b.scale),
            "balance_minor": b.posted.0,
            "reserved_minor": b.reserved.0,
            "available_minor": b.available.0,
            "allowances": b.allowances.iter().map(|a| serde_json::json!({
                "unit": a.unit.as_str(), "remaining": a.remaining, "reserved": a.reserved, "valid_until_ms": a.valid_until.0
            })).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{v}");
    } else {
        let _ = writeln!(
            out,
            "account {} {}: balance {} reserved {} available {} (credit limit {})",
            b.account_id,
            b.currency,
            b.posted.to_decimal(b.scale),
            b.reserved.to_decimal(b.scale),
            b.available.to_decimal(b.scale),
            b.credit_limit.to_decimal(b.scale)
        );
        for a in &b.allowances {
            let _ = writeln!(
                out,
                "  allowance {} {}: {} left, {} reserved, valid until {} ms",
                a.id, a.unit, a.remaining, a.reserved, a.valid_until.0
            );
        }
    }
}

pub async fn run_account(
    cmd: &AccountCmd,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    // Validate input before touching the database so a typo never half-creates anything.
    match &cmd.action {
        AccountAction::Create {
            id,
            currency,
            balance,
            credit_limit,
            subscriptions,
            allowances,
        } => {
            let currency = Currency::parse(currency)?;
            let balance = currency.parse_amount(balance)?;
            let credit_limit = currency.parse_amount(credit_limit)?;
            let subscriptions = subscriptions
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<SubscriptionId>, _>>()?;
            let allowances = allowances
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<AllowanceSpec>, _>>()?;
            let db = cmd.db.open().await?;
            let a = NewAccount {
                id: id.clone(),
                currency,
                balance,
                credit_limit,
                subscriptions,
                allowances,
            };
            admin::create_account(&db, &a, clock.now()).await?;
            let b = admin::show(&db, id, clock.now()).await?;
            print_balance(&b, false, out);
        }
        AccountAction::Topup { id, amount } => {
            let db = cmd.db.open().await?;
            let before = admin::show(&db, id, clock.now()).await?;
            let b = admin::topup(&db, id, amount, clock.now()).await?;
            print_balance(&b, false, out);
            // Sessions that got what was left now have more to get (RFC 4006 §5.5).
            let exhausted =
                session_requests::sessions_with_final_grant(&db, id, before.available.0).await?;
            let kind = SessionRequestKind::Reauth;
            let ids =
                session_requests::enqueue_sessions(&db, kind, &exhausted, "topup", clock.now())
                    .await?;
            print_queued(kind, &ids, out);
        }
        AccountAction::Block { id }
        | AccountAction::Unblock { id }
        | AccountAction::Close { id } => {
            let (status, kind) = match &cmd.action {
                AccountAction::Block { .. } => (AccountStatus::Blocked, SessionRequestKind::Abort),
                AccountAction::Close { .. } => (AccountStatus::Closed, SessionRequestKind::Abort),
                _ => (AccountStatus::Active, SessionRequestKind::Reauth),
            };
            let db = cmd.db.open().await?;
            let before = admin::set_status(&db, id, status).await?;
            let _ = writeln!(out, "account {id}: {before} -> {}", status.as_str());
            if before != status.as_str() {
                let open = session_requests::open_sessions(&db, Some(id)).await?;
                let reason = status.as_str();
                let ids = session_requests::enqueue_sessions(&db, kind, &open, reason, clock.now())
                    .await?;
                print_queued(kind, &ids, out);
            }
        }
        AccountAction::Show { id, json } => {
            let db = cmd.db.open().await?;
            let b = admin::show(&db, id, clock.now()).await?;
            print_balance(&b, *json, out);
        }
        AccountAction::List { json } => {
            let db = cmd.db.open().await?;
            let list = admin::list(&db).await?;
            if *json {
                let _ = writeln!(out, "{}", serde_json::to_string(&list).unwrap_or_default());
            } else {
                for a in list {
                    let _ = writeln!(
                        out,
                        "{} {} {} balance {} reserved {} {}",
                        a.id,
                        a.currency,
                        a.status,
                        a.balance,
                        a.reserved,
                        a.subscriptions.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}

/// `tollgate tariff set|list`
#[derive(Debug, Clone, Args)]
pub struct TariffCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub action: TariffAction,
}

/// `--final-unit-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalUnitActionArg {
    Terminate,
    Redirect,
    RestrictAccess,
}

// Parsed once per command line: the size of the `set` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Subcommand)]
pub enum TariffAction {
    /// Create or replace the price of one unit type for a service key.
    Set {
        #[arg(long)]
        service_context: String,
        #[arg(long, conflicts_with = "service_id")]
        rating_group: Option<u32>,
        #[arg(long)]
        service_id: Option<u32>,
        /// seconds | octets | units | money
        #[arg(long)]
        unit: String,
        /// Price per unit, a decimal in the currency ("0.01"); finer than a cent is allowed.
        #[arg(long)]
        price: String,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Units granted when a request names none.
        #[arg(long)]
        quantum: Option<u64>,
        /// Smaller grants are refused with 4012.
        #[arg(long)]
        min_grant: Option<u64>,
        /// Sent with each grant: ask again when this much of it is left, in --unit
        /// (Time-, Volume- or Unit-Quota-Threshold, TS 32.299 §7.2).
        #[arg(long)]
        quota_threshold: Option<u64>,
        /// Sent with each grant: Quota-Holding-Time, seconds (TS 32.299 §7.2.151).
        #[arg(long)]
        quota_holding_time: Option<u32>,
        /// Sent with each grant: Quota-Consumption-Time, seconds (TS 32.299 §7.2.150).
        #[arg(long)]
        quota_consumption_time: Option<u32>,
        /// Validity-Time of each grant, seconds, in place of the server's
        /// credit_control.validity_time_s; the reservation's Tcc follows it.
        #[arg(long)]
        validity_time: Option<u32>,
        /// What the client does when a final grant is used up (Final-Unit-Action, RFC 4006
        /// §5.6): terminate, redirect (to --redirect-address) or restrict-access (to
        /// --filter-id).
        #[arg(long, value_enum, default_value = "terminate")]
        final_unit_action: FinalUnitActionArg,
        /// Where `redirect` sends the user: a URL (a top-up page), a SIP URI, or an IP address.
        #[arg(long, required_if_eq("final_unit_action", "redirect"))]
        redirect_address: Option<String>,
        /// The client's filter that `restrict-access` applies (Filter-Id).
        #[arg(long, required_if_eq("final_unit_action", "restrict-access"))]
        filter_id: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_tariff(
    cmd: &TariffCmd,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match &cmd.action {
        TariffAction::Set {
            service_context,
            rating_group,
            service_id,
            unit,
            price,
            currency,
            quantum,
            min_grant,
            quota_threshold,
            quota_holding_time,
            quota_consumption_time,
            validity_time,
            final_unit_action,
            redirect_address,
            filter_id,
        } => {
            let unit: UnitType = unit
                .parse()
                .map_err(|e: tollgate_ocs::units::UnknownUnit| AdminError::Input(e.to_string()))?;
            let currency = Currency::parse(currency)?;
            Price::parse(price, currency.scale)?;
            if service_context.is_empty() {
                return Err(AdminError::Input(
                    "bad --service-context: must not be empty".into(),
                ));
            }
            let db = cmd.db.open().await?;
            let spec = TariffSpec {
                service: ServiceKey {
                    service_context: service_context.clone(),
                    rating_group: *rating_group,
                    service_id: *service_id,
                },
                unit,
                currency,
                price: price.clone(),
                quantum: *quantum,
                min_grant: *min_grant,
                quota: QuotaPolicy {
                    threshold: *quota_threshold,
                    holding_time_s: *quota_holding_time,
                    consumption_time_s: *quota_consumption_time,
                    validity_time_s: *validity_time,
                },
                final_unit: match (final_unit_action, redirect_address, filter_id) {
                    (FinalUnitActionArg::Redirect, Some(address), _) => FinalUnitPolicy::Redirect {
                        address: address.clone(),
                    },
                    (FinalUnitActionArg::RestrictAccess, _, Some(f)) => {
                        FinalUnitPolicy::RestrictAccess {
                            filter_id: f.clone(),
                        }
                    }
                    // clap requires the address or the filter with their action.
                    _ => FinalUnitPolicy::Terminate,
                },
            };
            let t = admin::set_tariff(&db, &spec, clock.now()).await?;
            print_tariff(&t, out);
            // Sessions rated by the old price are re-authorised under the new one.
            let rated =
                session_requests::sessions_rated_in(&db, service_context, *rating_group).await?;
            let kind = SessionRequestKind::Reauth;
            let ids = session_requests::enqueue_sessions(&db, kind, &rated, "tariff", clock.now())
                .await?;
            print_queued(kind, &ids, out);
        }
        TariffAction::List { json } => {
            let db = cmd.db.open().await?;
            let list = admin::list_tariffs(&db).await?;
            if *json {
                let _ = writeln!(out, "{}", serde_json::to_string(&list).unwrap_or_default());
            } else {
                for t in &list {
                    print_tariff(t, out);
                }
            }
        }
    }
    Ok(())
}

fn print_queued(kind: SessionRequestKind, ids: &[i64], out: &mut dyn Write) {
    for id in ids {
        let _ = writeln!(out, "queued {} request {id}", kind.as_str());
    }
}

fn print_tariff(t: &Tariff, out: &mut dyn Write) {
    let scale = Currency::parse(&t.currency).map(|c| c.scale).unwrap_or(2);
    let key = match (t.service.rating_group, t.service.service_id) {
        (Some(rg), _) => format!("{} rating-group {rg}", t.service.service_context),
        (_, Some(sid)) => format!("{} service-id {sid}", t.service.service_context),
        _ => t.service.service_context.clone(),
    };
    let _ = writeln!(
        out,
        "{key} {}: {} {} per unit, quantum {}, min grant {}",
        t.unit,
        t.price.to_decimal(scale),
        t.currency,
        t.quantum,
        t.min_grant
    );
    let q = &t.quota;
    let mut policy = Vec::new();
    if let Some(v) = q.threshold {
        policy.push(format!("threshold {v}"));
    }
    if let Some(v) = q.holding_time_s {
        policy.push(format!("holding time {v} s"));
    }
    if let Some(v) = q.consumption_time_s {
        policy.push(format!("consumption time {v} s"));
    }
    if let Some(v) = q.validity_time_s {
        policy.push(format!("validity time {v} s"));
    }
    match &t.final_unit {
        FinalUnitPolicy::Terminate => {}
        FinalUnitPolicy::Redirect { address } => {
            policy.push(format!("final units: redirect to {address}"))
        }
        FinalUnitPolicy::RestrictAccess { filter_id } => policy.push(format!(
            "final units: restrict access to filter {filter_id}"
        )),
    }
    if !policy.is_empty() {
        let _ = writeln!(out, "    quota {}", policy.join(", "));
    }
}

/// `tollgate ledger verify`
#[derive(Debug, Clone, Args)]
pub struct LedgerCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub action: LedgerAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LedgerAction {
    /// Recompute balances from entries and check every reservation; exit 1 on any mismatch.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_ledger(cmd: &LedgerCmd, out: &mut dyn Write) -> Result<(), AdminError> {
    match &cmd.action {
        LedgerAction::Verify { json } => {
            let db = cmd.db.open().await?;
            let rep = admin::verify(&db).await?;
            if *json {
                let _ = writeln!(out, "{}", serde_json::to_string(&rep).unwrap_or_default());
            } else {
                for p in &rep.problems {
                    let _ = writeln!(out, "INCONSISTENT {p}");
                }
                let _ = writeln!(
                    out,
                    "ledger verify: {} accounts, {} entries, {} reservations, {} problems",
                    rep.accounts,
                    rep.entries,
                    rep.reservations,
                    rep.problems.len()
                );
            }
            if rep.is_consistent() {
                Ok(())
            } else {
                Err(AdminError::Inconsistent(rep.problems.len()))
            }
        }
    }
}

/// `tollgate session …`
#[derive(Debug, Clone, Args)]
pub struct SessionCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub action: SessionAction,
}

/// Which open sessions: one (`--session-id`) or all of an account (`--account`).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct SessionTarget {
    /// The Session-Id of one open session.
    #[arg(long)]
    pub session_id: Option<String>,
    /// Every open session of this account.
    #[arg(long)]
    pub account: Option<String>,
}

impl SessionTarget {
    fn selector(&self) -> SessionSelector {
        match (&self.session_id, &self.account) {
            (Some(s), _) => SessionSelector::Session(s.clone()),
            (None, Some(a)) => SessionSelector::Account(a.clone()),
            // clap's group makes one of the two required.
            (None, None) => SessionSelector::Session(String::new()),
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionAction {
    /// List open sessions (one line each, or JSON).
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Queue a Re-Auth-Request (RFC 4006 §5.5): the node that has the session's client
    /// connected sends it, and the client asks again with a CCR-U.
    Reauth(SessionTarget),
    /// Queue an Abort-Session-Request (RFC 6733 §8.5): the client ends the session (CCR-T).
    Abort(SessionTarget),
    /// Show queued requests by id: state, attempts, the client's Result-Code.
    Requests {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_session(
    cmd: &SessionCmd,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let db = cmd.db.open().await?;
    match &cmd.action {
        SessionAction::List { account, json } => {
            let sessions = session_requests::open_sessions(&db, account.as_deref()).await?;
            for s in &sessions {
                let _ = if *json {
                    writeln!(out, "{}", serde_json::to_string(s).unwrap_or_default())
                } else {
                    writeln!(
                        out,
                        "{}  account={} client={} credits={} pending={}",
                        s.session_id, s.account_id, s.peer_host, s.credits, s.pending_amount
                    )
                };
            }
            Ok(())
        }
        SessionAction::Reauth(target) | SessionAction::Abort(target) => {
            let kind = match cmd.action {
                SessionAction::Reauth(_) => SessionRequestKind::Reauth,
                _ => SessionRequestKind::Abort,
            };
            let selector = target.selector();
            let ids =
                session_requests::enqueue(&db, kind, &selector, "operator", clock.now()).await?;
            print_queued(kind, &ids, out);
            Ok(())
        }
        SessionAction::Requests { ids, json } => {
            for r in session_requests::requests(&db, ids).await? {
                let _ = if *json {
                    writeln!(out, "{}", serde_json::to_string(&r).unwrap_or_default())
                } else {
                    writeln!(
                        out,
                        "{} {} {} state={} attempts={} result_code={} {}",
                        r.id,
                        r.kind.as_str(),
                        r.session_id,
                        r.state,
                        r.attempts,
                        r.result_code.map(|c| c.to_string()).unwrap_or_default(),
                        r.detail.unwrap_or_default()
                    )
                };
            }
            Ok(())
        }
    }
}
