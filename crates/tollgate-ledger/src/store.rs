//! Connection handling shared by both backends: a typed pool (`sqlx::PgPool` or
//! `sqlx::SqlitePool`) for the ledger's batches, where every statement is prepared and row sets
//! are bound as typed arrays; a small `sqlx::AnyPool` for the operator's and auditor's
//! statements (admin, verify, balance), which are the same SQL on both stores and run rarely;
//! a [`Dialect`] for the few of those that differ; and the embedded migrations
//! (`migrations/{postgres,sqlite}`, referenced by relative path so the layout survives the
//! move into the main workspace).

use crate::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use std::str::FromStr;
use std::time::Duration;

pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn from_url(url: &str) -> Result<Dialect, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }
    /// `FOR UPDATE` on PostgreSQL; SQLite has one writer at a time (`BEGIN IMMEDIATE`).
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }
    /// Start a ledger transaction (one round trip).
    ///
    /// PostgreSQL: every statement of a ledger transaction looks rows up by key for a handful
    /// of keys, so it is planned for that: nested loops over index scans, no sequential,
    /// bitmap, hash or merge scans, for this transaction only. Left to itself the planner
    /// reads "open reservations of these sessions" (or "these reservation ids") by scanning
    /// the whole partial index `reservations_expiry` (`WHERE status = 'open'`), which until a
    /// vacuum still holds an entry for every reservation resolved since the last one: measured
    /// 1.7–2.6 ms per statement with 39 k such entries against 0.05 ms for the keyed lookup,
    /// and growing with traffic. Likewise it scans the small, hot `accounts` table
    /// sequentially, walking every dead row version recent transactions left. Plans are also
    /// generic (planned once per connection): the parameters are keys and JSON row sets that no
    /// plan depends on, and re-planning the batch's statements for every batch measured ~1.3 ms
    /// of PostgreSQL CPU per batch, a third as much as executing them.
    pub(crate) fn begin(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                 SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
                 SET LOCAL plan_cache_mode = force_generic_plan"
            }
            // Take the write lock up front so two writers never deadlock on lock upgrade.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }
}

/// A pooled connection idle at least this long is pinged before a batch uses it.
const IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Pool sizing; a named field with a default for every limit (docs/architecture.md, "Limits
/// and defaults").
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 8,
            acquire_timeout_ms: 10_000,
        }
    }
}

/// The ledger's batch connections, typed by store.
#[derive(Debug, Clone)]
pub(crate) enum TypedPool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Connections of the operator's and auditor's pool (admin, verify, balance, metrics): they
/// are few and short, and must not take the batches' connections.
const ADMIN_CONNECTIONS: u32 = 2;

/// A connected database: the pools and the dialect.
#[derive(Debug, Clone)]
pub struct Database {
    /// Dialect-neutral statements of the operator, the auditor and the tests.
    pub pool: AnyPool,
    pub dialect: Dialect,
    /// The ledger's batches.
    pub(crate) typed: TypedPool,
}

impl Database {
    /// Connect to `postgres://…` or `sqlite://…` (the SQLite file is created when missing).
    pub async fn connect(url: &str, cfg: &PoolConfig) -> Result<Database, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            _ => url.to_string(),
        };
        let opts =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Connect(e.to_string()))?;
        let max = match dialect {
            Dialect::Postgres => cfg.max_connections.max(1),
            // One writer at a time anyway; a few readers for balance/verify.
            Dialect::Sqlite => cfg.max_connections.clamp(1, 4),
        };
        let typed = connect_typed(&url, dialect, max, cfg).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(ADMIN_CONNECTIONS)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            // sqlx pings every connection it hands out by default: one extra round trip per
            // ledger batch (~1 in 6 on PostgreSQL), paid while the batch holds nothing yet but
            // delays every caller in it. A connection back from a batch a moment ago is alive;
            // only one that sat idle is pinged (a failed ping closes it and another is used).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        use sqlx::Connection;
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        use sqlx::Executor;
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Database {
            pool,
            dialect,
            typed,
        })
    }

    /// How many connections the ledger's batches may hold at once.
    pub(crate) fn batch_connections(&self) -> u32 {
        match &self.typed {
            TypedPool::Postgres(p) => p.options().get_max_connections(),
            TypedPool::Sqlite(p) => p.options().get_max_connections(),
        }
    }

    /// Apply the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let m = match self.dialect {
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
        };
        m.run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }
}

/// The PRAGMAs of every embedded-store connection: WAL with synchronous=FULL (a commit is on
/// disk before it is answered), foreign keys on, and a writer waits for the lock rather than
/// failing.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
    PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;";

/// The batches' pool, with the same sizing, timeouts and ping policy as the admin pool.
async fn connect_typed(
    url: &str,
    dialect: Dialect,
    max: u32,
    cfg: &PoolConfig,
) -> Result<TypedPool, StoreError> {
    let err = |e: sqlx::Error| StoreError::Connect(e.to_string());
    let acquire = Duration::from_millis(cfg.acquire_timeout_ms);
    match dialect {
        Dialect::Postgres => {
            let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(err)?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(acquire)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= IDLE_PING_AFTER {
                            use sqlx::Connection;
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .map_err(err)?;
            Ok(TypedPool::Postgres(pool))
        }
        Dialect::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(err)?;
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(acquire)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                })
                .connect_with(opts)
                .await
                .map_err(err)?;
            Ok(TypedPool::Sqlite(pool))
        }
    }
}

/// Open a ledger transaction on a pooled connection: `BEGIN IMMEDIATE` on SQLite, on
/// PostgreSQL `BEGIN` with every statement planned as the keyed lookup it is
/// ([`Dialect::begin`]). The caller COMMITs or ROLLs BACK.
pub(crate) async fn begin_transaction(
    db: &Database,
) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, sqlx::Error> {
    use sqlx::Executor;
    let mut conn = db.pool.acquire().await?;
    conn.execute(db.dialect.begin()).await?;
    Ok(conn)
}
