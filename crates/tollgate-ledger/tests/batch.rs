//! One batch holding many operations answers and writes exactly what the same operations do
//! one at a time. The script below is sent twice per backend: once through the naive path
//! (one transaction per operation, each awaited before the next is sent) and once queued all
//! at once to a single batch worker that waits long enough to take them in one batch. The
//! batch is decided in memory by the money engine and written set-based (one statement on
//! PostgreSQL, one per table on SQLite), so this holds one batch of many to batches of one,
//! where every operation sees the rows the previous ones committed: a reservation opened and
//! posted in the same batch, a retransmission and a changed duplicate of a request earlier in
//! the batch, an allowance and a balance drawn on twice, a release followed by a new reserve of
//! the same session.

mod common;

use common::TestDb;
use std::sync::Arc;
use tollgate_ledger::admin::{self, AllowanceSpec, TariffSpec};
use tollgate_ledger::{Database, Dialect};
use tollgate_ocs::*;

const CTX: &str = "32260@3gpp.org";
const T0: i64 = 1_800_000_000_000;

type Answer = common::Pending<String>;

fn key(session: &str, n: u32) -> RequestKey {
    RequestKey::new("as.example.net", session, n)
}

fn sub(n: &str) -> SubscriptionId {
    SubscriptionId::e164(n)
}

fn svc() -> ServiceKey {
    ServiceKey::context(CTX)
}

fn rg(n: u32) -> ServiceKey {
    svc().with_rating_group(n)
}

fn exp() -> Timestamp {
    Timestamp(T0 + 600_000)
}

fn reserve(l: &Arc<dyn Ledger>, k: RequestKey, msisdn: &str, s: &str, req: Option<u64>) -> Answer {
    reserve_for(l, k, msisdn, s, req, svc())
}

fn reserve_for(
    l: &Arc<dyn Ledger>,
    k: RequestKey,
    msisdn: &str,
    s: &str,
    req: Option<u64>,
    service: ServiceKey,
) -> Answer {
    let l = l.clone();
    let r = ReserveRequest {
        key: k,
        subscriber: sub(msisdn),
        service,
        unit: UnitType::Seconds,
        requested_units: req,
        session_ref: s.into(),
        expires_at: exp(),
        tcc: None,
    };
    Box::pin(async move { format!("{:?}", l.reserve(r).await) })
}

fn commit(l: &Arc<dyn Ledger>, k: RequestKey, s: &str, used: u64, next: bool, fin: bool) -> Answer {
    commit_for(l, k, s, used, next, fin, svc())
}

fn commit_for(
    l: &Arc<dyn Ledger>,
    k: RequestKey,
    s: &str,
    used: u64,
    next: bool,
    fin: bool,
    service: ServiceKey,
) -> Answer {
    let l = l.clone();
    let r = CommitRequest {
        key: k,
        session_ref: s.into(),
        service,
        used: common::used_in_every_unit(used),
        next: next.then_some(NextReservation {
            requested_units: None,
            expires_at: exp(),
            tcc: None,
        }),
        final_commit: fin,
        cdr: fin.then(|| serde_json::json!({"ims": {"session": s}})),
    };
    Box::pin(async move { format!("{:?}", l.commit(r).await) })
}

fn release(l: &Arc<dyn Ledger>, k: RequestKey, s: &str) -> Answer {
    let l = l.clone();
    let r = ReleaseRequest {
        key: k,
        session_ref: s.into(),
        service: None,
        cdr: Some(serde_json::Value::Null),
    };
    Box::pin(async move { format!("{:?}", l.release(r).await) })
}

fn debit(l: &Arc<dyn Ledger>, k: RequestKey, msisdn: &str, units: u64) -> Answer {
    let l = l.clone();
    let r = DirectDebitRequest {
        key: k,
        subscriber: sub(msisdn),
        service: svc(),
        unit: UnitType::Seconds,
        units,
        cdr: None,
    };
    Box::pin(async move { format!("{:?}", l.direct_debit(r).await) })
}

fn refund(l: &Arc<dyn Ledger>, k: RequestKey, msisdn: &str, minor: i64) -> Answer {
    let l = l.clone();
    let r = RefundRequest {
        key: k,
        subscriber: sub(msisdn),
        amount: RefundAmount::Money(Money(minor)),
    };
    Box::pin(async move { format!("{:?}", l.refund(r).await) })
}

/// The script, in sending order.
fn script(l: &Arc<dyn Ledger>) -> Vec<Answer> {
    let (alice, bob) = ("15550000001", "15550000002");
    vec![
        reserve(l, key("s1", 0), alice, "s1", Some(60)),
        commit(l, key("s1", 1), "s1", 42, false, true),
        reserve(l, key("s2", 0), alice, "s2", None),
        reserve(l, key("s2", 0), alice, "s2", None),
        reserve(l, key("s2", 0), alice, "s2", Some(5)),
        debit(l, key("e1", 0), alice, 30),
        reserve(l, key("s3", 0), bob, "s3", Some(10_000)),
        reserve(l, key("s4", 0), bob, "s4", Some(100)),
        commit(l, key("s3", 1), "s3", 5, true, false),
        release(l, key("s2", 1), "s2"),
        refund(l, key("r1", 0), alice, 7),
        reserve(l, key("s5", 0), "15559999999", "s5", Some(1)),
        commit(l, key("s9", 1), "s9", 1, false, true),
        reserve(l, key("s2", 2), alice, "s2", Some(20)),
        reserve(l, key("s2", 3), alice, "s2", Some(20)),
        commit(l, key("s3", 7), "s3", u64::MAX, false, true),
        commit(l, key("s3", 2), "s3", 1_000, false, true),
        commit(l, key("s2", 4), "s2", 3, false, true),
        debit(l, key("e2", 0), bob, 1_000_000),
        release(l, key("s1", 9), "s1"),
        debit(l, key("e1", 0), alice, 30),
        // Two rating groups in one session: the final commit of one says the other is open.
        reserve_for(
            l,
            key("m1", 0).with_rating_group(1),
            alice,
            "m1",
            Some(10),
            rg(1),
        ),
        reserve_for(
            l,
            key("m1", 0).with_rating_group(2),
            alice,
            "m1",
            Some(10),
            rg(2),
        ),
        commit_for(
            l,
            key("m1", 1).with_rating_group(1),
            "m1",
            4,
            false,
            true,
            rg(1),
        ),
        release(l, key("m1", 2), "m1"),
    ]
}

async fn provision(db: &Database) {
    admin::set_tariff(
        db,
        &TariffSpec {
            service: svc(),
            unit: UnitType::Seconds,
            currency: Currency::parse("EUR").expect("eur"),
            price: "0.01".into(),
            quantum: Some(60),
            min_grant: Some(10),
            quota: Default::default(),
            final_unit: Default::default(),
        },
        Timestamp(T0),
    )
    .await
    .expect("tariff");
    for (id, msisdn, balance, alw) in [
        ("alice", "15550000001", 1_000, 40),
        ("bob", "15550000002", 30, 0),
    ] {
        let allowances = (alw > 0)
            .then_some(AllowanceSpec {
                unit: UnitType::Seconds,
                units: alw,
                valid_until: Timestamp(T0 + 86_400_000),
            })
            .into_iter()
            .collect();
        common::eur_account(db, id, msisdn, balance, 0, allowances, Timestamp(T0)).await;
    }
}

/// Run the script on a fresh database; `batched` queues it all before waiting for any answer.
async fn run(test_db: TestDb, batched: bool) -> (Vec<String>, Vec<String>) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    // Long enough that everything sent below is in the first batch.
    let ledger = common::one_worker_ledger(&test_db.url, batched, 500_000, clock).await;
    let db = ledger.database().clone();
    provision(&db).await;
    let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
    let mut answers = Vec::new();
    if batched {
        answers = common::send_in_order(script(&l)).await;
    } else {
        for f in script(&l) {
            answers.push(f.await);
        }
    }
    // The batch never failed and fell back to one transaction per op: the test would then
    // compare batches of one with batches of one, not one batch of many.
    assert_eq!(ledger.split_batches(), 0);
    if batched && db.dialect == Dialect::Postgres {
        // And, from the database's side, one transaction wrote every row.
        let row = sqlx::query(
            "SELECT count(DISTINCT CAST(CAST(xmin AS TEXT) AS BIGINT)) FROM journal \
             WHERE request_key NOT LIKE '~%'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("xmin");
        assert_eq!(sqlx::Row::try_get::<i64, _>(&row, 0).expect("count"), 1);
    }
    let rows = common::dump(&db).await;
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    drop(l);
    drop(ledger);
    db.pool.close().await;
    test_db.drop_db().await;
    (answers, rows)
}

async fn one_batch_equals_one_at_a_time(make: impl Fn() -> Option<TestDb>) {
    let (Some(a), Some(b)) = (make(), make()) else {
        return;
    };
    let (seq_answers, seq_rows) = run(a, false).await;
    let (batch_answers, batch_rows) = run(b, true).await;
    for (i, (s, b)) in seq_answers.iter().zip(&batch_answers).enumerate() {
        assert_eq!(s, b, "answer {i} differs");
    }
    assert_eq!(seq_answers.len(), batch_answers.len());
    // The script reaches every kind of answer it was written for.
    let all = seq_answers.join("\n");
    for expected in [
        "Granted",
        "ChangedDuplicate",
        "CreditLimitReached",
        "UnknownSubscriber",
        "NoReservation",
        "ReservationOpen",
        "InvalidRequest",
        "Debited",
        "Refunded",
        "unbilled: Money(",
        "session_open: Some(1)",
    ] {
        assert!(all.contains(expected), "no {expected} in {all}");
    }
    for (s, b) in seq_rows.iter().zip(&batch_rows) {
        assert_eq!(s, b);
    }
    assert_eq!(seq_rows.len(), batch_rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_equals_one_at_a_time_postgres() {
    let (a, b) = (
        TestDb::postgres("batch_seq").await,
        TestDb::postgres("batch_one").await,
    );
    let cell = std::sync::Mutex::new(vec![b, a]);
    one_batch_equals_one_at_a_time(|| cell.lock().ok()?.pop().flatten()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_equals_one_at_a_time_sqlite() {
    one_batch_equals_one_at_a_time(|| Some(TestDb::sqlite())).await;
}
