//! Model-based test of the ledger (issue 17's proof): random sequences of operations (several
//! sessions and rating groups, retransmissions, changed duplicates, direct debits, refunds,
//! top-ups and expiries) run on a real store twice: split into random batches (group commit,
//! one transaction per batch) and one operation per transaction. Both runs must give the same
//! answers and the same auditor-visible rows, and a small money model, independent of the
//! engine, must agree with both after every step:
//! - balance = Σ entries (`ledger verify`), reserved = Σ open holds;
//! - no account below its credit limit (balance − reserved ≥ −credit limit);
//! - a request key charged at most once (one post, debit or refund entry per key);
//! - each account's balance = opening + top-ups − Σ charged + Σ refunded, summed from the
//!   answers, each request key counted once.
//!
//! Cases: `PROPTEST_CASES` (default 12 per store, so the suite stays short in CI); run with
//! more by hand, e.g. `PROPTEST_CASES=300 cargo test -p tollgate-ledger --test model`.

mod common;

use common::TestDb;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tollgate_ledger::admin::{self, AllowanceSpec, TariffSpec};
use tollgate_ledger::Database;
use tollgate_ocs::*;

const CTX: &str = "32260@3gpp.org";
const T0: i64 = 1_800_000_000_000;
/// Reservations expire this long after the clock's time when they are asked for.
const VALIDITY_MS: i64 = 30_000;
const ACCOUNTS: [(&str, &str, i64, i64); 2] = [
    // id, MSISDN, opening balance, credit limit (minor units)
    ("alice", "15550000001", 1_000, 0),
    ("bob", "15550000002", 30, 50),
];
const SESSIONS: usize = 4;

/// One step of a generated run.
#[derive(Debug, Clone)]
enum Step {
    Reserve {
        account: usize,
        session: usize,
        rating_group: Option<u32>,
        requested: Option<u64>,
    },
    Commit {
        session: usize,
        rating_group: Option<u32>,
        used: u64,
        next: bool,
        last: bool,
    },
    Release {
        session: usize,
    },
    DirectDebit {
        account: usize,
        units: u64,
    },
    Refund {
        account: usize,
        minor: i64,
    },
    /// An earlier request sent again, unchanged (a retransmission).
    Repeat {
        back: usize,
    },
    /// An earlier request's key with other content (a changed duplicate).
    Changed {
        back: usize,
    },
    /// Time passes and the sweeper expires what is due (ends the current batch).
    Expire {
        after_ms: i64,
    },
    /// An operator tops an account up (ends the current batch).
    TopUp {
        account: usize,
        minor: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let rg = prop_oneof![Just(None), Just(Some(7u32)), Just(Some(8u32))];
    prop_oneof![
        4 => (0..ACCOUNTS.len(), 0..SESSIONS, rg.clone(), prop_oneof![Just(None), (1u64..120).prop_map(Some)])
            .prop_map(|(account, session, rating_group, requested)| Step::Reserve { account, session, rating_group, requested }),
        4 => (0..SESSIONS, rg, 0u64..200, any::<bool>(), any::<bool>())
            .prop_map(|(session, rating_group, used, next, last)| Step::Commit { session, rating_group, used, next: next && !last, last }),
        1 => (0..SESSIONS).prop_map(|session| Step::Release { session }),
        2 => (0..ACCOUNTS.len(), 1u64..40).prop_map(|(account, units)| Step::DirectDebit { account, units }),
        1 => (0..ACCOUNTS.len(), 1i64..80).prop_map(|(account, minor)| Step::Refund { account, minor }),
        2 => (0usize..12).prop_map(|back| Step::Repeat { back }),
        1 => (0usize..12).prop_map(|back| Step::Changed { back }),
        1 => (0i64..60_000).prop_map(|after_ms| Step::Expire { after_ms }),
        1 => (0..ACCOUNTS.len(), 1i64..300).prop_map(|(account, minor)| Step::TopUp { account, minor }),
    ]
}

/// A request, fully determined, so it can be sent again as it was.
#[derive(Debug, Clone)]
enum Request {
    Reserve(ReserveRequest),
    Commit(CommitRequest),
    Release(ReleaseRequest),
    DirectDebit(DirectDebitRequest),
    Refund(RefundRequest),
}

impl Request {
    fn key(&self) -> String {
        match self {
            Request::Reserve(r) => r.key.to_key_string(),
            Request::Commit(r) => r.key.to_key_string(),
            Request::Release(r) => r.key.to_key_string(),
            Request::DirectDebit(r) => r.key.to_key_string(),
            Request::Refund(r) => r.key.to_key_string(),
        }
    }

    /// The same key with different content.
    fn changed(&self) -> Request {
        let mut r = self.clone();
        match &mut r {
            Request::Reserve(x) => x.requested_units = Some(x.requested_units.unwrap_or(0) + 1),
            Request::Commit(x) => {
                let s = x.used.seconds.unwrap_or(0) + 1;
                x.used = UsedUnits::of(UnitType::Seconds, s);
            }
            Request::Release(x) => x.service = Some(ServiceKey::context(CTX).with_rating_group(99)),
            Request::DirectDebit(x) => x.units += 1,
            Request::Refund(x) => {
                if let RefundAmount::Money(m) = &mut x.amount {
                    m.0 += 1;
                }
            }
        }
        r
    }

    fn send(&self, l: &Arc<dyn Ledger>) -> common::Pending<Answer> {
        let l = l.clone();
        let r = self.clone();
        Box::pin(async move {
            match r {
                Request::Reserve(x) => Answer::Reserve(l.reserve(x).await),
                Request::Commit(x) => Answer::Commit(l.commit(x).await),
                Request::Release(x) => Answer::Release(l.release(x).await),
                Request::DirectDebit(x) => Answer::DirectDebit(l.direct_debit(x).await),
                Request::Refund(x) => Answer::Refund(l.refund(x).await),
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Reserve(Result<ReserveOutcome, LedgerError>),
    Commit(Result<CommitOutcome, LedgerError>),
    Release(Result<Released, LedgerError>),
    DirectDebit(Result<DirectDebitOutcome, LedgerError>),
    Refund(Result<RefundOutcome, LedgerError>),
}

impl Answer {
    /// An outcome (grant, refusal, charge…) is stored under the request's key; an error is
    /// not.
    fn is_stored(&self) -> bool {
        match self {
            Answer::Reserve(r) => r.is_ok(),
            Answer::Commit(r) => r.is_ok(),
            Answer::Release(r) => r.is_ok(),
            Answer::DirectDebit(r) => r.is_ok(),
            Answer::Refund(r) => r.is_ok(),
        }
    }
}

/// What a run does at one point: a batch of requests, or an operator/sweeper action.
#[derive(Debug, Clone)]
enum Action {
    Batch(Vec<(usize, Request)>),
    Expire { at: Timestamp },
    TopUp { account: usize, minor: i64 },
}

/// Turns steps into requests (keys numbered per session), grouped into batches of the given
/// sizes; expiries and top-ups end a batch.
fn plan(steps: &[Step], sizes: &[usize]) -> (Vec<Request>, Vec<Action>) {
    let mut requests: Vec<Request> = Vec::new();
    let mut actions = Vec::new();
    let mut batch: Vec<(usize, Request)> = Vec::new();
    let mut numbers = [0u32; SESSIONS];
    let mut now = T0;
    let mut sizes = sizes.iter().copied().cycle();
    let mut limit = sizes.next().unwrap_or(1);
    let service = |rg: Option<u32>| match rg {
        Some(rg) => ServiceKey::context(CTX).with_rating_group(rg),
        None => ServiceKey::context(CTX),
    };
    let session_key = |s: usize, n: u32, rg: Option<u32>| {
        let k = RequestKey::new("as.example.net", format!("s{s}"), n);
        match rg {
            Some(rg) => k.with_rating_group(rg),
            None => k,
        }
    };
    let flush = |batch: &mut Vec<(usize, Request)>, actions: &mut Vec<Action>| {
        if !batch.is_empty() {
            actions.push(Action::Batch(std::mem::take(batch)));
        }
    };
    for (i, s) in steps.iter().enumerate() {
        let request = match s {
            Step::Reserve {
                account,
                session,
                rating_group,
                requested,
            } => {
                numbers[*session] += 1;
                Some(Request::Reserve(ReserveRequest {
                    key: session_key(*session, numbers[*session], *rating_group),
                    subscriber: SubscriptionId::e164(ACCOUNTS[*account].1),
                    service: service(*rating_group),
                    unit: UnitType::Seconds,
                    requested_units: *requested,
                    session_ref: format!("s{session}"),
                    expires_at: Timestamp(now + VALIDITY_MS),
                    tcc: None,
                }))
            }
            Step::Commit {
                session,
                rating_group,
                used,
                next,
                last,
            } => {
                numbers[*session] += 1;
                Some(Request::Commit(CommitRequest {
                    key: session_key(*session, numbers[*session], *rating_group),
                    session_ref: format!("s{session}"),
                    service: service(*rating_group),
                    used: UsedUnits::of(UnitType::Seconds, *used),
                    next: next.then_some(NextReservation {
                        requested_units: None,
                        expires_at: Timestamp(now + VALIDITY_MS),
                        tcc: None,
                    }),
                    final_commit: *last,
                    cdr: None,
                }))
            }
            Step::Release { session } => {
                numbers[*session] += 1;
                Some(Request::Release(ReleaseRequest {
                    key: session_key(*session, numbers[*session], None),
                    session_ref: format!("s{session}"),
                    service: None,
                    cdr: None,
                }))
            }
            Step::DirectDebit { account, units } => {
                Some(Request::DirectDebit(DirectDebitRequest {
                    key: RequestKey::new("as.example.net", format!("e{i}"), 0),
                    subscriber: SubscriptionId::e164(ACCOUNTS[*account].1),
                    service: ServiceKey::context(CTX),
                    unit: UnitType::Seconds,
                    units: *units,
                    cdr: None,
                }))
            }
            Step::Refund { account, minor } => Some(Request::Refund(RefundRequest {
                key: RequestKey::new("as.example.net", format!("f{i}"), 0),
                subscriber: SubscriptionId::e164(ACCOUNTS[*account].1),
                amount: RefundAmount::Money(Money(*minor)),
            })),
            Step::Repeat { back } => requests
                .len()
                .checked_sub(1 + back)
                .map(|j| requests[j].clone()),
            Step::Changed { back } => requests
                .len()
                .checked_sub(1 + back)
                .map(|j| requests[j].changed()),
            Step::Expire { after_ms } => {
                flush(&mut batch, &mut actions);
                now += after_ms;
                actions.push(Action::Expire { at: Timestamp(now) });
                None
            }
            Step::TopUp { account, minor } => {
                flush(&mut batch, &mut actions);
                actions.push(Action::TopUp {
                    account: *account,
                    minor: *minor,
                });
                None
            }
        };
        if let Some(r) = request {
            batch.push((requests.len(), r.clone()));
            requests.push(r);
            if batch.len() >= limit {
                flush(&mut batch, &mut actions);
                limit = sizes.next().unwrap_or(1);
            }
        }
    }
    flush(&mut batch, &mut actions);
    (requests, actions)
}

async fn provision(db: &Database) {
    for (rg, price) in [(None, "0.01"), (Some(7), "0.02")] {
        let service = match rg {
            Some(rg) => ServiceKey::context(CTX).with_rating_group(rg),
            None => ServiceKey::context(CTX),
        };
        admin::set_tariff(
            db,
            &TariffSpec {
                service,
                unit: UnitType::Seconds,
                currency: Currency::parse("EUR").expect("eur"),
                price: price.into(),
                quantum: Some(30),
                min_grant: Some(5),
                quota: Default::default(),
                final_unit: Default::default(),
            },
            Timestamp(T0),
        )
        .await
        .expect("tariff");
    }
    for (i, (id, msisdn, balance, limit)) in ACCOUNTS.iter().enumerate() {
        let allowances = (i == 0)
            .then_some(AllowanceSpec {
                unit: UnitType::Seconds,
                units: 40,
                valid_until: Timestamp(T0 + 86_400_000),
            })
            .into_iter()
            .collect();
        common::eur_account(db, id, msisdn, *balance, *limit, allowances, Timestamp(T0)).await;
    }
}

/// The independent money model: what the answers say was charged and refunded, per account,
/// each request key counted once it has a stored answer, plus what operators added. An error
/// (`Err`) stores nothing (docs/architecture.md, "Errors choose the answer"), so the same key
/// may later carry another request that counts, e.g. a reserve refused with ReservationOpen
/// and sent again, changed, once the session's credit is gone. A commit's account is the one
/// whose reserve opened that session's service (sessions change hands after they end).
#[derive(Default)]
struct MoneyModel {
    counted: std::collections::HashSet<String>,
    owner: HashMap<(String, ServiceKey), usize>,
    /// Net change per account: top-ups + refunds − charges, minor units.
    net: BTreeMap<usize, i64>,
}

fn account_of(s: &SubscriptionId) -> usize {
    ACCOUNTS
        .iter()
        .position(|a| a.1 == s.data)
        .expect("a provisioned account")
}

impl MoneyModel {
    fn add(&mut self, account: usize, minor: i64) {
        *self.net.entry(account).or_default() += minor;
    }

    fn answer(&mut self, request: &Request, answer: &Answer) {
        let first = answer.is_stored() && self.counted.insert(request.key());
        match (request, answer) {
            // A replayed grant (a retransmission) opened nothing now: the session may have
            // changed hands since.
            (Request::Reserve(r), Answer::Reserve(Ok(ReserveOutcome::Granted(_)))) if first => {
                self.owner.insert(
                    (r.session_ref.clone(), r.service.clone()),
                    account_of(&r.subscriber),
                );
            }
            (Request::Commit(r), Answer::Commit(Ok(CommitOutcome::Committed(c)))) if first => {
                let owner = self.owner[&(r.session_ref.clone(), r.service.clone())];
                self.add(owner, -c.charged.0);
            }
            (
                Request::DirectDebit(r),
                Answer::DirectDebit(Ok(DirectDebitOutcome::Debited { charged, .. })),
            ) if first => self.add(account_of(&r.subscriber), -charged.0),
            (Request::Refund(r), Answer::Refund(Ok(RefundOutcome::Refunded { amount })))
                if first =>
            {
                self.add(account_of(&r.subscriber), amount.0)
            }
            _ => {}
        }
    }
}

/// One integer per row of an SQL query (same SQL on both stores).
async fn ints(db: &Database, sql: &str) -> Vec<(String, i64, i64, i64)> {
    sqlx::query(sql)
        .fetch_all(&db.pool)
        .await
        .expect(sql)
        .iter()
        .map(|r| {
            use sqlx::Row;
            (
                r.try_get::<String, _>(0).expect("id"),
                r.try_get::<i64, _>(1).expect("a"),
                r.try_get::<i64, _>(2).expect("b"),
                r.try_get::<i64, _>(3).expect("c"),
            )
        })
        .collect()
}

/// The invariants that hold after every batch, whatever the run.
async fn check_invariants(db: &Database, model: &MoneyModel, when: &str) {
    let report = admin::verify(db).await.expect("verify");
    assert!(
        report.is_consistent(),
        "{when}: verify: {:?}",
        report.problems
    );
    // balance − reserved ≥ −credit limit; reserved = Σ open holds.
    for (id, balance, reserved, limit) in ints(
        db,
        "SELECT id, balance, reserved, credit_limit FROM accounts ORDER BY id",
    )
    .await
    {
        assert!(
            balance - reserved >= -limit,
            "{when}: {id} below its credit limit: balance {balance}, reserved {reserved}, limit {limit}"
        );
        let held: i64 = ints(
            db,
            &format!(
                "SELECT account_id, CAST(SUM(pending_amount) AS BIGINT), 0, 0 \
                 FROM v_open_reservations WHERE account_id = '{id}' GROUP BY account_id"
            ),
        )
        .await
        .first()
        .map(|r| r.1)
        .unwrap_or(0);
        assert_eq!(reserved, held, "{when}: {id} reserved vs open holds");
        let i = ACCOUNTS
            .iter()
            .position(|a| a.0 == id)
            .expect("known account");
        let expected = ACCOUNTS[i].2 + model.net.get(&i).copied().unwrap_or(0);
        assert_eq!(balance, expected, "{when}: {id} balance vs the money model");
    }
    // A key is charged at most once.
    let twice = ints(
        db,
        "SELECT request_key, COUNT(*), 0, 0 FROM v_entries WHERE kind IN ('post', 'direct_debit', 'refund') GROUP BY request_key HAVING COUNT(*) > 1",
    )
    .await;
    assert!(twice.is_empty(), "{when}: keys charged twice: {twice:?}");
}

/// One run on a fresh store: `batched` sends each planned batch at once (one group-commit
/// transaction), else one request per transaction, awaited in order.
async fn run(test_db: &TestDb, actions: &[Action], batched: bool) -> (Vec<Answer>, Vec<String>) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    // Long enough that everything of one planned batch is in one transaction.
    let ledger = common::one_worker_ledger(&test_db.url, batched, 200_000, clock.clone()).await;
    let db = ledger.database().clone();
    provision(&db).await;
    let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
    let mut model = MoneyModel::default();
    let mut answers = Vec::new();
    for (n, action) in actions.iter().enumerate() {
        match action {
            Action::Batch(batch) => {
                let got: Vec<Answer> = if batched {
                    common::send_in_order(batch.iter().map(|(_, r)| r.send(&l)).collect()).await
                } else {
                    let mut got = Vec::new();
                    for (_, r) in batch {
                        got.push(r.send(&l).await);
                    }
                    got
                };
                for ((_, r), a) in batch.iter().zip(&got) {
                    model.answer(r, a);
                }
                answers.extend(got);
            }
            Action::Expire { at } => {
                clock.set(*at);
                l.expire(*at).await.expect("expire");
            }
            Action::TopUp { account, minor } => {
                let amount = format!("{}.{:02}", minor / 100, minor % 100);
                admin::topup(&db, ACCOUNTS[*account].0, &amount, clock.now())
                    .await
                    .expect("topup");
                model.add(*account, *minor);
            }
        }
        check_invariants(&db, &model, &format!("after action {n} ({action:?})")).await;
    }
    assert_eq!(ledger.split_batches(), 0, "a batch failed and was split");
    let rows = common::dump(&db).await;
    (answers, rows)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

fn check(backend: &str, steps: &[Step], sizes: &[usize]) {
    let (_, actions) = plan(steps, sizes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fresh = || async {
            match backend {
                "postgres" => TestDb::postgres("the model-based ledger test").await,
                _ => Some(TestDb::sqlite()),
            }
        };
        let (Some(a), Some(b)) = (fresh().await, fresh().await) else {
            return;
        };
        let (batched_answers, batched_rows) = run(&a, &actions, true).await;
        let (single_answers, single_rows) = run(&b, &actions, false).await;
        assert_eq!(batched_answers, single_answers, "answers differ");
        assert_eq!(batched_rows, single_rows, "rows differ");
        a.drop_db().await;
        b.drop_db().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn batched_and_one_by_one_agree_with_the_money_model_on_sqlite(
        steps in prop::collection::vec(step(), 1..60),
        sizes in prop::collection::vec(1usize..10, 1..8),
    ) {
        check("sqlite", &steps, &sizes);
    }

    #[test]
    fn batched_and_one_by_one_agree_with_the_money_model_on_postgres(
        steps in prop::collection::vec(step(), 1..60),
        sizes in prop::collection::vec(1usize..10, 1..8),
    ) {
        check("postgres", &steps, &sizes);
    }
}
