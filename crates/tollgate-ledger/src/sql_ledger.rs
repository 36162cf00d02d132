//! `SqlLedger`: the [`Ledger`] trait on a database, with group commit (docs/architecture.md,
//! "Group commit").
//!
//! Mutations go through bounded queues to `BatchConfig::workers` batch workers (one on SQLite,
//! which has one writer anyway). A worker takes the first queued op, keeps collecting until
//! `max_batch` ops or `max_wait_us` have passed, then applies the whole batch in ONE
//! transaction, in arrival order, commits once, and only then answers every caller: durable
//! before answered. The batch (`batch/`, both stores) locks every account it will touch in
//! id order, reads what its ops need, decides them with the money engine
//! (`tollgate_ocs::engine`) and writes its rows set-based; the naive baseline is the same
//! engine with a batch of one, one transaction per op on the caller's task.
//!
//! Sharding: ops are routed to a worker by their account (hash of the Subscription-Id; a commit
//! or release, which names only its session, goes where the session's reserve went, else by a
//! hash of the session_ref), so one account's ops queue in one worker, in order, and batches of
//! different workers mostly touch disjoint accounts and run in parallel on their own
//! connections. Routing is only about speed: correctness comes from the row locks, taken in id
//! order by every batch of every worker and node, so overlapping batches wait, never deadlock on
//! them, and never trust a cached balance.
//!
//! Failure policy: a refusal is an outcome, not a failure, and never aborts a batch. If the
//! batch transaction fails, it is retried (deadlock / serialization failure, up to
//! `max_retries`); a batch that still fails is split and each op is run alone, so only the op
//! that breaks the transaction answers `LedgerError::Store` (which the server answers with its
//! configured `store_failure_result`, 5012 by default: `tollgate-cc/src/app.rs`).
//! Nothing of a failed transaction stays, and every op is idempotent on its key, so a client
//! retry after a Store error is safe.

use crate::catalog::Catalog;
use crate::rows::{account_from_row, ACCOUNT_COLS};
use crate::store::{Database, Dialect, PoolConfig};
use crate::StoreError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_ocs::engine::{choose_tariff, Op, OpOutcome, OpResult};
use tollgate_ocs::*;

/// Group-commit limits (docs/architecture.md, "Limits and defaults": every limit is a named
/// field with a default).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most ops in one transaction.
    pub max_batch: usize,
    /// Longest a first op waits for company, in microseconds.
    pub max_wait_us: u64,
    /// Queued ops beyond this are refused with `LedgerError::Unavailable` (back-pressure).
    pub queue_capacity: usize,
    /// Retries of a whole batch on deadlock / serialization failure.
    pub max_retries: u32,
    /// Batch workers, each with its own queue (`queue_capacity` is split among them) and its own
    /// connection while a batch runs; ops are sharded by account. Forced to 1 on SQLite.
    pub workers: usize,
    /// Most remembered session → worker routes (a commit follows its reserve to the same
    /// worker). When full the table is emptied; later commits of older sessions are then routed
    /// by session hash, which only costs some lock waiting, never correctness.
    pub route_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 256,
            max_wait_us: 1000,
            queue_capacity: 8192,
            max_retries: 3,
            workers: 4,
            route_capacity: 262_144,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LedgerConfig {
    pub pool: PoolConfig,
    pub batch: BatchConfig,
    /// `true` runs every op in its own transaction on the caller's task (the engine with a
    /// batch of one): the naive path, kept as the benchmark baseline and as the one-at-a-time
    /// run the batched one is tested against (tests/batch.rs).
    pub naive_one_tx_per_op: bool,
    /// Most reservations one `expire` transaction resolves (it loops until none are left).
    pub expire_chunk: u32,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<OpResult>,
}

struct Inner {
    db: Database,
    /// Tariffs and Subscription-Ids cached for every batch of this process.
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    cfg: LedgerConfig,
    /// Batches that failed as a whole and were run again op by op (see the failure policy).
    split_batches: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// One attempt at a batch (`batch/`: a fixed number of statements whatever its size; the
    /// naive baseline calls it with one op).
    async fn run_once(&self, now: Timestamp, ops: &[Op]) -> Result<Vec<OpResult>, sqlx::Error> {
        crate::batch::run_batch(&self.db, &self.catalog, now, ops).await
    }
}

/// Picks the worker of an op (see the module docs).
struct Router {
    workers: usize,
    capacity: usize,
    /// session_ref → worker of the session's reserve.
    routes: Mutex<HashMap<String, usize>>,
}

impl Router {
    fn hash_to(&self, value: impl Hash) -> usize {
        // DefaultHasher::new() has fixed keys: the same value always picks the same worker.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        (h.finish() % self.workers as u64) as usize
    }

    fn route(&self, op: &Op) -> usize {
        if self.workers <= 1 {
            return 0;
        }
        let by_account = |s: &SubscriptionId| self.hash_to((s.kind.code(), s.data.as_str()));
        // A poisoned lock only means another caller panicked mid-insert; the map is still usable.
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            Op::Reserve(r) => {
                let w = by_account(&r.subscriber);
                if routes.len() >= self.capacity && !routes.contains_key(&r.session_ref) {
                    routes.clear();
                }
                routes.insert(r.session_ref.clone(), w);
                w
            }
            Op::DirectDebit(r) => by_account(&r.subscriber),
            Op::Refund(r) => by_account(&r.subscriber),
            Op::Commit(r) => {
                let w = routes.get(&r.session_ref).copied();
                // After a commit with a next grant the session stays on this worker; a final
                // one ends it.
                if r.final_commit {
                    routes.remove(&r.session_ref);
                }
                w.unwrap_or_else(|| self.hash_to(r.session_ref.as_str()))
            }
            Op::Release(r) => {
                let w = routes.get(&r.session_ref).copied();
                if r.service.is_none() {
                    routes.remove(&r.session_ref);
                }
                w.unwrap_or_else(|| self.hash_to(r.session_ref.as_str()))
            }
        }
    }
}

/// The SQL ledger. Cheap to clone; construct once per process and share as `Arc<dyn Ledger>`.
#[derive(Clone)]
pub struct SqlLedger {
    inner: Arc<Inner>,
    /// One queue per batch worker; empty on the naive path.
    queues: Arc<[mpsc::Sender<Job>]>,
    router: Arc<Router>,
}

impl SqlLedger {
    /// Connect to `postgres://…` or `sqlite://…`, apply migrations, start the batch worker.
    pub async fn connect(
        url: &str,
        cfg: LedgerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<SqlLedger, StoreError> {
        let db = Database::connect(url, &cfg.pool).await?;
        db.migrate().await?;
        Ok(SqlLedger::new(db, cfg, clock))
    }

    /// Use an already connected (and migrated) database. Must be called inside a tokio runtime.
    pub fn new(db: Database, mut cfg: LedgerConfig, clock: Arc<dyn Clock>) -> SqlLedger {
        if cfg.expire_chunk == 0 {
            cfg.expire_chunk = 1000;
        }
        let naive = cfg.naive_one_tx_per_op;
        let workers = match db.dialect {
            // One writer at a time on SQLite: more workers would only queue on its write lock.
            Dialect::Sqlite => 1,
            Dialect::Postgres => cfg.batch.workers.max(1),
        };
        let capacity = cfg.batch.queue_capacity.max(1).div_ceil(workers);
        let router = Arc::new(Router {
            workers,
            capacity: cfg.batch.route_capacity.max(1),
            routes: Mutex::new(HashMap::new()),
        });
        let inner = Arc::new(Inner {
            db,
            catalog: Catalog::default(),
            clock,
            cfg,
            split_batches: std::sync::atomic::AtomicU64::new(0),
        });
        let mut queues = Vec::new();
        if !naive {
            for _ in 0..workers {
                let (tx, rx) = mpsc::channel(capacity);
                tokio::spawn(batch_worker(inner.clone(), rx));
                queues.push(tx);
            }
        }
        SqlLedger {
            inner,
            queues: queues.into(),
            router,
        }
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// How many batches failed as a whole and were run again one op per transaction (also the
    /// `tollgate_ledger_split_batches_total` counter on /metrics).
    pub fn split_batches(&self) -> u64 {
        self.inner
            .split_batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn submit(&self, op: Op) -> OpResult {
        if op.has_nul() {
            return Err(LedgerError::InvalidRequest {
                reason: "text contains U+0000, which the ledger cannot store",
            });
        }
        if self.queues.is_empty() {
            let mut out = run_with_retries(&self.inner, std::slice::from_ref(&op)).await;
            return out.pop().unwrap_or(Err(LedgerError::Unavailable));
        }
        match self.queues.get(self.router.route(&op)) {
            None => Err(LedgerError::Unavailable),
            Some(q) => {
                let (tx, rx) = oneshot::channel();
                q.try_send(Job { op, reply: tx })
                    .map_err(|_| LedgerError::Unavailable)?;
                rx.await.map_err(|_| LedgerError::Unavailable)?
            }
        }
    }
}

async fn batch_worker(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let max = inner.cfg.batch.max_batch.max(1);
    let wait = Duration::from_micros(inner.cfg.batch.max_wait_us);
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while jobs.len() < max {
            // Take what is already queued without waiting, then wait out the deadline.
            match rx.try_recv() {
                Ok(j) => {
                    jobs.push(j);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => jobs.push(j),
                Ok(None) | Err(_) => break,
            }
        }
        // The operations move into the batch (a CCR-T's CDR payload can be large); the
        // replies wait beside them.
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.drain(..).map(|j| (j.op, j.reply)).unzip();
        let started = std::time::Instant::now();
        let results = run_with_retries(&inner, &ops).await;
        // Exported on the admin /metrics endpoint by the daemon's recorder.
        metrics::histogram!("tollgate_ledger_batch_size").record(ops.len() as f64);
        metrics::histogram!("tollgate_ledger_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::trace!(batch = ops.len(), "ledger batch committed");
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that went away (timed out) just misses its answer; the money is committed.
            let _ = reply.send(result);
        }
    }
}

/// A conflict between concurrent transactions: the whole batch may simply run again.
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("40P01") | Some("40001") | Some("5") | Some("517")
        ),
        _ => false,
    }
}

/// The database cannot be reached: retrying or splitting the batch would only make every
/// caller wait longer for the same answer, so the batch fails at once (the server answers
/// per its store-failure policy, and the pool reconnects when the database is back).
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// The connection (not the database) failed: closed by the server (SQLSTATE class 57P:
/// admin or crash shutdown, server starting) or by the network.
fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P")),
        _ => false,
    }
}

/// Run a batch; retry conflicts; on a persistent failure isolate the failing op.
async fn run_with_retries(inner: &Inner, ops: &[Op]) -> Vec<OpResult> {
    let mut attempt = 0;
    // Every pooled connection may have been closed at once: allow one retry per connection.
    let mut reconnects = inner.db.batch_connections();
    loop {
        let now = inner.clock.now();
        match inner.run_once(now, ops).await {
            Ok(out) => return out,
            // A pooled connection is handed out without a ping when it was busy a moment ago
            // (store.rs), so one the server closed meanwhile (restart, failover,
            // pg_terminate_backend) shows up here: it is not returned to the pool (sqlx pings
            // a connection on release), and the batch runs again on another. Safe even if the
            // lost connection's COMMIT went through: every op replays its stored outcome by key.
            Err(e) if is_connection_lost(&e) && reconnects > 0 => {
                reconnects -= 1;
                tracing::warn!(error = %e, batch = ops.len(), "ledger connection lost; retrying on a new one");
            }
            Err(e) if is_unavailable(&e) => {
                tracing::error!(error = %e, batch = ops.len(), "ledger database unavailable");
                return ops.iter().map(|_| Err(LedgerError::Unavailable)).collect();
            }
            Err(e) if is_retryable(&e) && attempt < inner.cfg.batch.max_retries => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "ledger batch retry");
            }
            Err(e) => {
                tracing::error!(error = %e, batch = ops.len(), "ledger batch failed");
                if ops.len() == 1 {
                    return vec![Err(LedgerError::Store {
                        message: e.to_string(),
                    })];
                }
                inner
                    .split_batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!("tollgate_ledger_split_batches_total").increment(1);
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    let now = inner.clock.now();
                    let r = match inner.run_once(now, std::slice::from_ref(op)).await {
                        Ok(mut v) => v.pop().unwrap_or(Err(LedgerError::Unavailable)),
                        Err(e) => Err(LedgerError::Store {
                            message: e.to_string(),
                        }),
                    };
                    out.push(r);
                }
                return out;
            }
        }
    }
}

fn store_err(e: sqlx::Error) -> LedgerError {
    LedgerError::Store {
        message: e.to_string(),
    }
}

#[async_trait]
impl Ledger for SqlLedger {
    async fn reserve(&self, req: ReserveRequest) -> Result<ReserveOutcome, LedgerError> {
        match self.submit(Op::Reserve(req)).await? {
            OpOutcome::Reserve(o) => Ok(o),
            _ => Err(LedgerError::Store {
                message: "stored outcome of another operation".into(),
            }),
        }
    }
    async fn commit(&self, req: CommitRequest) -> Result<CommitOutcome, LedgerError> {
        match self.submit(Op::Commit(req)).await? {
            OpOutcome::Commit(o) => Ok(o),
            _ => Err(LedgerError::Store {
                message: "stored outcome of another operation".into(),
            }),
        }
    }
    async fn release(&self, req: ReleaseRequest) -> Result<Released, LedgerError> {
        match self.submit(Op::Release(req)).await? {
            OpOutcome::Release(o) => Ok(o),
            _ => Err(LedgerError::Store {
                message: "stored outcome of another operation".into(),
            }),
        }
    }
    async fn direct_debit(
        &self,
        req: DirectDebitRequest,
    ) -> Result<DirectDebitOutcome, LedgerError> {
        match self.submit(Op::DirectDebit(req)).await? {
            OpOutcome::DirectDebit(o) => Ok(o),
            _ => Err(LedgerError::Store {
                message: "stored outcome of another operation".into(),
            }),
        }
    }
    async fn refund(&self, req: RefundRequest) -> Result<RefundOutcome, LedgerError> {
        match self.submit(Op::Refund(req)).await? {
            OpOutcome::Refund(o) => Ok(o),
            _ => Err(LedgerError::Store {
                message: "stored outcome of another operation".into(),
            }),
        }
    }

    async fn expire(&self, now: Timestamp) -> Result<ExpireReport, LedgerError> {
        let db = &self.inner.db;
        let mut report = ExpireReport::default();
        let chunk = self.inner.cfg.expire_chunk as i64;
        loop {
            let done = crate::batch::run_expire(db, now, chunk)
                .await
                .map_err(store_err)?;
            report.expired += done.report.expired;
            report.amount.0 += done.report.amount.0;
            report.units += done.report.units;
            if (done.found as i64) < chunk {
                return Ok(report);
            }
        }
    }

    async fn balance(&self, subscriber: &SubscriptionId) -> Result<Balance, LedgerError> {
        let db = &self.inner.db;
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM subscriptions s JOIN accounts a ON a.id = s.account_id WHERE s.sub_type = $1 AND s.sub_data = $2"
        ))
        .bind(i64::from(subscriber.kind.code()))
        .bind(&subscriber.data)
        .fetch_optional(&db.pool)
        .await
        .map_err(store_err)?;
        let Some(row) = row else {
            return Err(LedgerError::UnknownSubscriber);
        };
        let a = account_from_row(&row).map_err(store_err)?;
        crate::admin::balance_of(db, &a, self.inner.clock.now())
            .await
            .map_err(store_err)
    }

    async fn price(
        &self,
        service: &ServiceKey,
        unit: UnitType,
        units: u64,
    ) -> Result<Quote, LedgerError> {
        let tariffs = crate::batch::current_tariffs(&self.inner.db, &self.inner.catalog)
            .await
            .map_err(store_err)?;
        let t = choose_tariff(&tariffs, service, unit, None).ok_or(LedgerError::NoTariff)?;
        let scale = crate::admin::currency_scale(&t.currency);
        let amount = t
            .price
            .amount_for(units)
            .ok_or(LedgerError::InvalidRequest {
                reason: "price overflows",
            })?;
        Ok(Quote {
            amount,
            currency: t.currency,
            scale,
            price: t.price,
        })
    }
}
