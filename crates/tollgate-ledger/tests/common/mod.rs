//! Test databases: a fresh PostgreSQL database per test on the server named by
//! `TOLLGATE_TEST_PG_URL` (scripts/start-postgres prints one), or a fresh SQLite file.
#![allow(dead_code)]

use sqlx::{Connection, Executor};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_ENV: &str = "TOLLGATE_TEST_PG_URL";

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        t % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database URL plus how to throw it away.
pub struct TestDb {
    pub url: String,
    server: Option<String>,
    name: String,
}

impl TestDb {
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let server = tollgate_testkit::component(
            std::env::var(PG_ENV).ok(),
            &format!("PostgreSQL ({PG_ENV}) for {test}"),
            "scripts/test starts one with scripts/start-postgres and sets it",
        )?;
        sqlx::any::install_default_drivers();
        let name = unique("tg");
        let mut c = sqlx::AnyConnection::connect(&server)
            .await
            .expect("connect to test server");
        c.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        c.close().await.ok();
        let base = server
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .expect("url has a database part");
        Some(TestDb {
            url: format!("{base}/{name}"),
            server: Some(server),
            name,
        })
    }

    pub fn sqlite() -> TestDb {
        let name = unique("tg");
        let path = std::env::temp_dir().join(format!("{name}.sqlite3"));
        TestDb {
            url: format!("sqlite://{}", path.display()),
            server: None,
            name: path.display().to_string(),
        }
    }

    pub async fn drop_db(self) {
        match self.server {
            Some(server) => {
                if let Ok(mut c) = sqlx::AnyConnection::connect(&server).await {
                    let _ = c
                        .execute(
                            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str(),
                        )
                        .await;
                    c.close().await.ok();
                }
            }
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
                }
            }
        }
    }
}

/// Provision an EUR account holding one E.164 Subscription-Id, the ledger suites' usual
/// subscriber.
pub async fn eur_account(
    db: &tollgate_ledger::Database,
    id: &str,
    msisdn: &str,
    balance: i64,
    credit_limit: i64,
    allowances: Vec<tollgate_ledger::admin::AllowanceSpec>,
    created: tollgate_ocs::Timestamp,
) {
    use tollgate_ocs::{Currency, Money, SubscriptionId};
    let a = tollgate_ledger::admin::NewAccount {
        id: id.into(),
        currency: Currency::parse("EUR").expect("eur"),
        balance: Money(balance),
        credit_limit: Money(credit_limit),
        subscriptions: vec![SubscriptionId::e164(msisdn)],
        allowances,
    };
    tollgate_ledger::admin::create_account(db, &a, created)
        .await
        .expect("create account");
}

/// A usage report naming `used` in every unit type, for helpers that commit against
/// reservations of any unit: the ledger charges the amount in the reservation's unit.
pub fn used_in_every_unit(used: u64) -> tollgate_ocs::UsedUnits {
    tollgate_ocs::UsedUnits {
        seconds: Some(used),
        octets: Some(used),
        units: Some(used),
        money: Some(used),
    }
}

/// Every row an auditor sees, and every stored answer, without the generated ids
/// (reservation ids are random; entry, record and allowance ids come from sequences) but in
/// id order.
pub async fn dump(db: &tollgate_ledger::Database) -> Vec<String> {
    let queries = [
        "SELECT id || ' ' || balance || ' ' || reserved FROM accounts ORDER BY id",
        "SELECT account_id || ' ' || remaining || ' ' || reserved FROM allowances ORDER BY id",
        "SELECT e.account_id || ' ' || e.kind || ' ' || e.amount || ' ' || e.pending_delta || ' ' \
         || e.units || ' ' || e.pending_units || ' ' || COALESCE(CAST(e.used_units AS TEXT), '-') \
         || ' ' || e.unbilled || ' ' || COALESCE(e.request_key, '-') || ' ' \
         || COALESCE(e.session_ref, '-') || ' ' || CASE WHEN e.allowance_id IS NULL THEN 'money' ELSE 'allowance' END \
         || ' ' || e.created_at_ms FROM v_entries e ORDER BY e.entry_id",
        "SELECT session_ref || ' ' || service_context || ' ' || COALESCE(CAST(rating_group AS TEXT), '-') \
         || ' ' || unit || ' ' || granted_units || ' ' || allowance_units || ' ' || pending_amount \
         || ' ' || session_used || ' ' || session_charged || ' ' || expires_at_ms || ' ' || created_at_ms \
         FROM v_open_reservations ORDER BY session_ref, service_context, rating_group",
        "SELECT account_id || ' ' || kind || ' ' || session_ref || ' ' || unit || ' ' || used_units \
         || ' ' || charged || ' ' || request_key || ' ' || COALESCE(CAST(payload AS TEXT), 'NULL') \
         FROM charging_records ORDER BY id",
        "SELECT request_key || ' ' || op || ' ' || fingerprint || ' ' || outcome \
         || ' ' || COALESCE(account_id, '-') || ' ' || created_at_ms FROM journal \
         WHERE part = 0 AND outcome IS NOT NULL ORDER BY request_key",
    ];
    let mut out = Vec::new();
    for q in queries {
        for row in sqlx::query(q).fetch_all(&db.pool).await.expect(q) {
            out.push(sqlx::Row::try_get::<String, _>(&row, 0).expect("text"));
        }
        out.push("--".into());
    }
    out
}

/// A request to the ledger, not yet sent.
pub type Pending<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Sends requests so that the ledger takes them in one batch when it can: each is polled once,
/// in order, so it is queued before the next is made; then the answers are collected, in
/// order.
pub async fn send_in_order<T>(requests: Vec<Pending<T>>) -> Vec<T> {
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = Vec::new();
    for mut f in requests {
        pending.push(match f.as_mut().poll(&mut cx) {
            Poll::Ready(a) => Err(a),
            Poll::Pending => Ok(f),
        });
    }
    let mut answers = Vec::new();
    for p in pending {
        answers.push(match p {
            Ok(f) => f.await,
            Err(a) => a,
        });
    }
    answers
}

/// A ledger with one batch worker that waits `max_wait_us` to fill a batch, or, when not
/// `batched`, the one-transaction-per-operation path.
pub async fn one_worker_ledger(
    url: &str,
    batched: bool,
    max_wait_us: u64,
    clock: std::sync::Arc<tollgate_ocs::ManualClock>,
) -> tollgate_ledger::SqlLedger {
    use tollgate_ledger::{BatchConfig, LedgerConfig, SqlLedger};
    let cfg = LedgerConfig {
        naive_one_tx_per_op: !batched,
        batch: BatchConfig {
            workers: 1,
            max_batch: 256,
            max_wait_us,
            ..BatchConfig::default()
        },
        ..LedgerConfig::default()
    };
    SqlLedger::connect(url, cfg, clock).await.expect("connect")
}
