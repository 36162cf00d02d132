//! One conformance suite, run against both backends (SQLite always; PostgreSQL when
//! TOLLGATE_TEST_PG_URL is set).

mod common;

use common::TestDb;
use sqlx::Executor;
use std::sync::Arc;
use tollgate_ledger::admin::{self, AllowanceSpec, TariffSpec};
use tollgate_ledger::{Database, Dialect, LedgerConfig, SqlLedger};
use tollgate_ocs::*;

const CTX: &str = "32260@3gpp.org";
const IM: &str = "im@oma";
const T0: i64 = 1_800_000_000_000;

fn key(session: &str, n: u32) -> RequestKey {
    RequestKey::new("pcscf.example.net", session, n)
}

fn sub(n: &str) -> SubscriptionId {
    SubscriptionId::e164(n)
}

async fn provision(
    db: &Database,
    id: &str,
    msisdn: &str,
    balance: i64,
    allowances: Vec<AllowanceSpec>,
) {
    account(db, id, msisdn, balance, 0, allowances).await
}

fn reserve(
    k: RequestKey,
    msisdn: &str,
    session: &str,
    requested: Option<u64>,
    expires: Timestamp,
) -> ReserveRequest {
    ReserveRequest {
        key: k,
        subscriber: sub(msisdn),
        service: ServiceKey::context(CTX),
        unit: UnitType::Seconds,
        requested_units: requested,
        session_ref: session.into(),
        expires_at: expires,
        tcc: None,
    }
}

fn commit(
    k: RequestKey,
    session: &str,
    used: u64,
    next: bool,
    final_commit: bool,
    expires: Timestamp,
) -> CommitRequest {
    CommitRequest {
        key: k,
        session_ref: session.into(),
        service: ServiceKey::context(CTX),
        used: common::used_in_every_unit(used),
        next: next.then_some(NextReservation {
            requested_units: None,
            expires_at: expires,
            tcc: None,
        }),
        final_commit,
        cdr: final_commit.then(|| serde_json::json!({"ims": {"calling": "sip:alice@example.com"}})),
    }
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    let row = sqlx::query(sql).fetch_one(&db.pool).await.expect(sql);
    sqlx::Row::try_get::<i64, _>(&row, 0).expect("i64")
}

async fn suite(test_db: TestDb) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let ledger = SqlLedger::connect(&test_db.url, LedgerConfig::default(), clock.clone())
        .await
        .expect("connect");
    let db = ledger.database().clone();
    let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
    let eur = Currency::parse("EUR").expect("eur");
    for (ctx, unit, price, quantum, min) in [
        (CTX, UnitType::Seconds, "0.01", 60, 10),
        (IM, UnitType::Units, "0.10", 1, 1),
    ] {
        admin::set_tariff(
            &db,
            &TariffSpec {
                service: ServiceKey::context(ctx),
                unit,
                currency: eur.clone(),
                price: price.into(),
                quantum: Some(quantum),
                min_grant: Some(min),
                quota: Default::default(),
                final_unit: Default::default(),
            },
            Timestamp(T0),
        )
        .await
        .expect("tariff");
    }
    provision(&db, "alice", "15550000001", 1000, vec![]).await;
    provision(&db, "bob", "15550000002", 5, vec![]).await;
    provision(
        &db,
        "carol",
        "15550000003",
        100,
        vec![AllowanceSpec {
            unit: UnitType::Units,
            units: 5,
            valid_until: Timestamp(T0 + 86_400_000),
        }],
    )
    .await;
    let exp = |s: i64| Timestamp(T0).plus_seconds(s);

    // Reserve with the tariff quantum; a retry replays; a changed duplicate is an error.
    let r1 = l
        .reserve(reserve(key("s1", 0), "15550000001", "s1", None, exp(30)))
        .await
        .expect("reserve");
    let ReserveOutcome::Granted(g) = r1.clone() else {
        panic!("expected grant, got {r1:?}")
    };
    assert_eq!((g.units, g.amount, g.final_grant), (60, Money(60), false));
    let again = l
        .reserve(reserve(key("s1", 0), "15550000001", "s1", None, exp(45)))
        .await
        .expect("retry");
    assert_eq!(again, r1, "a retry returns the stored outcome");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM v_entries WHERE kind = 'pending'").await,
        1
    );
    let changed = l
        .reserve(reserve(
            key("s1", 0),
            "15550000001",
            "s1",
            Some(30),
            exp(30),
        ))
        .await;
    assert!(
        matches!(changed, Err(LedgerError::ChangedDuplicate { .. })),
        "{changed:?}"
    );

    // Commit usage above the grant (charged: overdraft within the balance) and reserve again.
    let c = l
        .commit(commit(key("s1", 1), "s1", 70, true, false, exp(60)))
        .await
        .expect("commit");
    let CommitOutcome::Committed(c) = c else {
        panic!("{c:?}")
    };
    assert_eq!((c.charged, c.unbilled), (Money(70), Money(0)));
    assert!(
        matches!(
            c.next,
            Some(ReserveOutcome::Granted(Grant { units: 60, .. }))
        ),
        "{c:?}"
    );
    let c2 = l
        .commit(commit(key("s1", 1), "s1", 70, true, false, exp(90)))
        .await
        .expect("commit retry");
    assert_eq!(c2, CommitOutcome::Committed(c));
    // Final commit writes the charging data record with the session totals.
    let c3 = l
        .commit(commit(key("s1", 2), "s1", 10, false, true, exp(0)))
        .await
        .expect("final");
    assert!(
        matches!(
            c3,
            CommitOutcome::Committed(Committed {
                charged: Money(10),
                ..
            })
        ),
        "{c3:?}"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT used_units FROM charging_records WHERE session_ref = 's1'"
        )
        .await,
        80
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT charged FROM charging_records WHERE session_ref = 's1'"
        )
        .await,
        80
    );
    let b = l.balance(&sub("15550000001")).await.expect("balance");
    assert_eq!(
        (b.posted, b.reserved, b.available),
        (Money(920), Money(0), Money(920))
    );
    let late = l
        .commit(commit(key("s1", 3), "s1", 5, false, true, exp(0)))
        .await
        .expect("late");
    assert_eq!(late, CommitOutcome::Refused(Refusal::NoReservation));

    // Refusals: short credit (and it stays a refusal after a top-up), unknown, no tariff.
    let short = l
        .reserve(reserve(
            key("b1", 0),
            "15550000002",
            "b1",
            Some(100),
            exp(30),
        ))
        .await
        .expect("reserve");
    assert_eq!(short, ReserveOutcome::Refused(Refusal::CreditLimitReached));
    admin::topup(&db, "bob", "10.00", Timestamp(T0))
        .await
        .expect("topup");
    let short2 = l
        .reserve(reserve(
            key("b1", 0),
            "15550000002",
            "b1",
            Some(100),
            exp(30),
        ))
        .await
        .expect("retry");
    assert_eq!(short2, short, "a refusal stays a refusal on retry");
    let unknown = l
        .reserve(reserve(key("u1", 0), "19999999999", "u1", None, exp(30)))
        .await
        .expect("reserve");
    assert_eq!(unknown, ReserveOutcome::Refused(Refusal::UnknownSubscriber));
    let mut nt = reserve(key("n1", 0), "15550000001", "n1", None, exp(30));
    nt.service = ServiceKey::context("nothing@example");
    assert_eq!(
        l.reserve(nt).await.expect("reserve"),
        ReserveOutcome::Refused(Refusal::NoTariff)
    );
    // A partial grant when the balance is short, flagged final.
    let partial = l
        .reserve(reserve(
            key("b2", 0),
            "15550000002",
            "b2",
            Some(2000),
            exp(30),
        ))
        .await
        .expect("reserve");
    assert!(
        matches!(
            partial,
            ReserveOutcome::Granted(Grant {
                units: 1005,
                final_grant: true,
                ..
            })
        ),
        "{partial:?}"
    );

    // Expiry by the sweeper with a manual clock; nothing is charged; late usage is refused.
    l.reserve(reserve(
        key("s2", 0),
        "15550000001",
        "s2",
        Some(100),
        exp(30),
    ))
    .await
    .expect("reserve");
    assert_eq!(l.expire(clock.now()).await.expect("expire").expired, 0);
    clock.advance_seconds(31);
    let ex = l.expire(clock.now()).await.expect("expire");
    assert_eq!(
        (ex.expired, ex.amount),
        (2, Money(1105)),
        "s2 and b2 both lapsed"
    );
    assert_eq!(l.expire(clock.now()).await.expect("expire").expired, 0);
    assert_eq!(
        l.commit(commit(key("s2", 1), "s2", 10, false, true, exp(0)))
            .await
            .expect("late"),
        CommitOutcome::Refused(Refusal::NoReservation)
    );
    assert_eq!(
        l.balance(&sub("15550000001"))
            .await
            .expect("balance")
            .posted,
        Money(920)
    );

    // Release (CCR-T without usage): voids; a retry replays.
    l.reserve(reserve(key("s3", 0), "15550000001", "s3", None, exp(600)))
        .await
        .expect("reserve");
    let rel = ReleaseRequest {
        key: key("s3", 1),
        session_ref: "s3".into(),
        service: None,
        cdr: None,
    };
    let r = l.release(rel.clone()).await.expect("release");
    assert_eq!((r.reservations, r.amount), (1, Money(60)));
    assert_eq!(l.release(rel).await.expect("retry"), r);
    assert_eq!(
        l.balance(&sub("15550000001"))
            .await
            .expect("balance")
            .reserved,
        Money(0)
    );

    // Direct debit with allowances used before money.
    let dd = |n: u32, units: u64| DirectDebitRequest {
        key: key("e1", n),
        subscriber: sub("15550000003"),
        service: ServiceKey::context(IM),
        unit: UnitType::Units,
        units,
        cdr: Some(serde_json::json!({"message": n})),
    };
    let d1 = l.direct_debit(dd(0, 3)).await.expect("dd");
    assert_eq!(
        d1,
        DirectDebitOutcome::Debited {
            units: 3,
            from_allowance: 3,
            charged: Money(0)
        }
    );
    assert_eq!(l.direct_debit(dd(0, 3)).await.expect("retry"), d1);
    let d2 = l.direct_debit(dd(1, 4)).await.expect("dd");
    assert_eq!(
        d2,
        DirectDebitOutcome::Debited {
            units: 4,
            from_allowance: 2,
            charged: Money(20)
        }
    );
    let d3 = l.direct_debit(dd(2, 100)).await.expect("dd");
    assert_eq!(d3, DirectDebitOutcome::Refused(Refusal::CreditLimitReached));
    let cb = l.balance(&sub("15550000003")).await.expect("balance");
    assert_eq!(cb.posted, Money(80));
    assert_eq!(cb.allowances.len(), 1);
    assert_eq!(cb.allowances[0].remaining, 0);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM charging_records WHERE kind = 'event'"
        )
        .await,
        2
    );

    // Refunds: money and units; retries replay.
    let rf = RefundRequest {
        key: key("r1", 0),
        subscriber: sub("15550000001"),
        amount: RefundAmount::Money(Money(100)),
    };
    let o = l.refund(rf.clone()).await.expect("refund");
    assert_eq!(o, RefundOutcome::Refunded { amount: Money(100) });
    assert_eq!(l.refund(rf).await.expect("retry"), o);
    let rf2 = RefundRequest {
        key: key("r2", 0),
        subscriber: sub("15550000003"),
        amount: RefundAmount::Units {
            service: ServiceKey::context(IM),
            unit: UnitType::Units,
            units: 2,
        },
    };
    assert_eq!(
        l.refund(rf2).await.expect("refund"),
        RefundOutcome::Refunded { amount: Money(20) }
    );
    assert_eq!(
        l.balance(&sub("15550000001"))
            .await
            .expect("balance")
            .posted,
        Money(1020)
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM v_entries WHERE kind = 'refund'").await,
        2
    );

    // Price enquiry.
    let q = l
        .price(
            &ServiceKey::context(CTX).with_rating_group(7),
            UnitType::Seconds,
            90,
        )
        .await
        .expect("price");
    assert_eq!((q.amount, q.currency.as_str()), (Money(90), "EUR"));

    // The ledger verifies; then a hand-corrupted entry is caught.
    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    let mut conn = db.pool.acquire().await.expect("conn");
    match db.dialect {
        Dialect::Postgres => {
            conn.execute("SET session_replication_role = replica")
                .await
                .expect("bypass trigger");
        }
        Dialect::Sqlite => {
            conn.execute("DROP TRIGGER journal_no_update")
                .await
                .expect("drop trigger");
        }
    }
    conn.execute("UPDATE journal SET amount = amount - 1, pending_delta = pending_delta + 1 WHERE entry_id = (SELECT MIN(entry_id) FROM journal WHERE kind = 'post')")
        .await
        .expect("corrupt");
    if db.dialect == Dialect::Postgres {
        conn.execute("SET session_replication_role = origin")
            .await
            .expect("restore");
    }
    drop(conn);
    let rep = admin::verify(&db).await.expect("verify");
    assert!(!rep.is_consistent());
    assert!(
        rep.problems
            .iter()
            .any(|p| p.contains("balance mismatch") && p.contains("alice")),
        "{:?}",
        rep.problems
    );
    assert!(
        rep.problems
            .iter()
            .any(|p| p.starts_with("reservation life cycle")),
        "{:?}",
        rep.problems
    );
    drop(l);
    drop(ledger);
    db.pool.close().await;
    test_db.drop_db().await;
}

async fn account(
    db: &Database,
    id: &str,
    msisdn: &str,
    balance: i64,
    credit: i64,
    alw: Vec<AllowanceSpec>,
) {
    common::eur_account(db, id, msisdn, balance, credit, alw, Timestamp(T0)).await
}

/// Edges the main suite does not reach. Same assertions on both backends, whose batches are
/// decided by the money engine and written set-based in each store's SQL (tests/batch.rs holds
/// one batch of many to batches of one).
async fn edges(test_db: TestDb) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let ledger = SqlLedger::connect(&test_db.url, LedgerConfig::default(), clock.clone())
        .await
        .expect("connect");
    let db = ledger.database().clone();
    let l: Arc<dyn Ledger> = Arc::new(ledger.clone());
    let eur = Currency::parse("EUR").expect("eur");
    for (svc, unit, price, quantum, min) in [
        (ServiceKey::context(CTX), UnitType::Seconds, "0.01", 60, 10),
        (
            ServiceKey::context(CTX).with_rating_group(7),
            UnitType::Seconds,
            "0.02",
            30,
            1,
        ),
        (ServiceKey::context(IM), UnitType::Units, "0.10", 1, 1),
    ] {
        admin::set_tariff(
            &db,
            &TariffSpec {
                service: svc,
                unit,
                currency: eur.clone(),
                price: price.into(),
                quantum: Some(quantum),
                min_grant: Some(min),
                quota: Default::default(),
                final_unit: Default::default(),
            },
            Timestamp(T0),
        )
        .await
        .expect("tariff");
    }
    let day = Timestamp(T0 + 86_400_000);
    account(
        &db,
        "dave",
        "15550000010",
        100,
        50,
        vec![AllowanceSpec {
            unit: UnitType::Seconds,
            units: 40,
            valid_until: day,
        }],
    )
    .await;
    account(&db, "erin", "15550000011", 30, 0, vec![]).await;
    account(&db, "frank", "15550000012", 1000, 0, vec![]).await;
    account(&db, "gina", "15550000013", 1000, 0, vec![]).await;
    account(
        &db,
        "hank",
        "15550000014",
        1000,
        0,
        vec![AllowanceSpec {
            unit: UnitType::Units,
            units: 10,
            valid_until: day,
        }],
    )
    .await;
    let exp = |s: i64| Timestamp(T0).plus_seconds(s);

    // Allowance before money on a grant; commit covers usage from the allowance first, then
    // opens the next grant in the same transaction.
    let g = l
        .reserve(reserve(
            key("d1", 0),
            "15550000010",
            "d1",
            Some(100),
            exp(600),
        ))
        .await
        .expect("reserve");
    assert_eq!(
        g,
        ReserveOutcome::Granted(Grant {
            units: 100,
            from_allowance: 40,
            amount: Money(60),
            final_grant: false,
            expires_at: exp(600),
            quota: Default::default(),
            final_unit: Default::default(),
        })
    );
    let c = l
        .commit(commit(key("d1", 1), "d1", 120, true, false, exp(900)))
        .await
        .expect("commit");
    assert_eq!(
        c,
        CommitOutcome::Committed(Committed {
            charged: Money(80),
            from_allowance: 40,
            unbilled: Money(0),
            next: Some(ReserveOutcome::Granted(Grant {
                units: 60,
                from_allowance: 0,
                amount: Money(60),
                final_grant: false,
                expires_at: exp(900),
                quota: Default::default(),
                final_unit: Default::default(),
            })),
            session_open: None
        })
    );
    // Changed duplicate of a commit: an error, nothing changes.
    let changed = l
        .commit(commit(key("d1", 1), "d1", 121, true, false, exp(900)))
        .await;
    assert!(
        matches!(changed, Err(LedgerError::ChangedDuplicate { .. })),
        "{changed:?}"
    );
    // Overdraft within the credit limit, the rest unbilled; session totals on the record.
    let c = l
        .commit(commit(key("d1", 2), "d1", 100, false, true, exp(0)))
        .await
        .expect("final");
    assert_eq!(
        c,
        CommitOutcome::Committed(Committed {
            charged: Money(70),
            from_allowance: 0,
            unbilled: Money(30),
            next: None,
            session_open: Some(0)
        })
    );
    let b = l.balance(&sub("15550000010")).await.expect("balance");
    assert_eq!(
        (b.posted, b.reserved, b.available),
        (Money(-50), Money(0), Money(0))
    );
    assert_eq!(
        (b.allowances[0].remaining, b.allowances[0].reserved),
        (0, 0)
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT used_units FROM charging_records WHERE session_ref = 'd1'"
        )
        .await,
        220
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT charged FROM charging_records WHERE session_ref = 'd1'"
        )
        .await,
        150
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT unbilled FROM v_entries WHERE request_key LIKE '%|2:d1|2|'"
        )
        .await,
        30
    );

    // Short balance without credit: a final partial grant, usage above it unbilled, then refused.
    let g = l
        .reserve(reserve(key("e1", 0), "15550000011", "e1", None, exp(600)))
        .await
        .expect("reserve");
    assert_eq!(
        g,
        ReserveOutcome::Granted(Grant {
            units: 30,
            from_allowance: 0,
            amount: Money(30),
            final_grant: true,
            expires_at: exp(600),
            quota: Default::default(),
            final_unit: Default::default(),
        })
    );
    let c = l
        .commit(commit(key("e1", 1), "e1", 50, false, true, exp(0)))
        .await
        .expect("final");
    assert_eq!(
        c,
        CommitOutcome::Committed(Committed {
            charged: Money(30),
            from_allowance: 0,
            unbilled: Money(20),
            next: None,
            session_open: Some(0)
        })
    );
    assert_eq!(
        l.reserve(reserve(key("e2", 0), "15550000011", "e2", None, exp(600)))
            .await
            .expect("reserve"),
        ReserveOutcome::Refused(Refusal::CreditLimitReached)
    );

    // Blocked account: refusals, stored and replayed.
    sqlx::query("UPDATE accounts SET status = 'blocked' WHERE id = 'frank'")
        .execute(&db.pool)
        .await
        .expect("block");
    let blocked = l
        .reserve(reserve(key("f1", 0), "15550000012", "f1", None, exp(600)))
        .await
        .expect("reserve");
    assert_eq!(blocked, ReserveOutcome::Refused(Refusal::AccountBlocked));
    let ddf = DirectDebitRequest {
        key: key("f2", 0),
        subscriber: sub("15550000012"),
        service: ServiceKey::context(IM),
        unit: UnitType::Units,
        units: 1,
        cdr: None,
    };
    assert_eq!(
        l.direct_debit(ddf.clone()).await.expect("dd"),
        DirectDebitOutcome::Refused(Refusal::AccountBlocked)
    );
    sqlx::query("UPDATE accounts SET status = 'active' WHERE id = 'frank'")
        .execute(&db.pool)
        .await
        .expect("unblock");
    assert_eq!(
        l.direct_debit(ddf).await.expect("dd"),
        DirectDebitOutcome::Refused(Refusal::AccountBlocked),
        "a refusal stays a refusal"
    );

    // Request errors store nothing: the same key works once corrected.
    let mut dd = DirectDebitRequest {
        key: key("f3", 0),
        subscriber: sub("15550000012"),
        service: ServiceKey::context(IM),
        unit: UnitType::Units,
        units: u64::MAX,
        cdr: None,
    };
    assert_eq!(
        l.direct_debit(dd.clone()).await,
        Err(LedgerError::InvalidRequest {
            reason: "unit count beyond 2^63"
        })
    );
    dd.units = 2;
    assert_eq!(
        l.direct_debit(dd).await.expect("dd"),
        DirectDebitOutcome::Debited {
            units: 2,
            from_allowance: 0,
            charged: Money(20)
        }
    );
    let bad = CommitRequest {
        next: Some(NextReservation {
            requested_units: None,
            expires_at: exp(0),
            tcc: None,
        }),
        ..commit(key("f4", 0), "f4", 1, false, true, exp(0))
    };
    assert_eq!(
        l.commit(bad).await,
        Err(LedgerError::InvalidRequest {
            reason: "a final commit cannot open a next reservation"
        })
    );
    let rf = RefundRequest {
        key: key("f5", 0),
        subscriber: sub("15550000012"),
        amount: RefundAmount::Units {
            service: ServiceKey::context("nothing@example"),
            unit: UnitType::Units,
            units: 3,
        },
    };
    assert_eq!(
        l.refund(rf).await.expect("refund"),
        RefundOutcome::Refused(Refusal::NoTariff)
    );
    let rf = RefundRequest {
        key: key("f6", 0),
        subscriber: sub("15550000012"),
        amount: RefundAmount::Money(Money(0)),
    };
    assert!(matches!(
        l.refund(rf).await,
        Err(LedgerError::InvalidRequest { .. })
    ));

    // Several reservations of one session (context-wide and rating group 7, which has its own
    // tariff), a second reserve is an error, one release voids both.
    let g = l
        .reserve(reserve(key("g1", 0), "15550000013", "g1", None, exp(600)))
        .await
        .expect("reserve");
    assert!(
        matches!(
            g,
            ReserveOutcome::Granted(Grant {
                units: 60,
                amount: Money(60),
                ..
            })
        ),
        "{g:?}"
    );
    let mut rg = reserve(
        key("g1", 0).with_rating_group(7),
        "15550000013",
        "g1",
        None,
        exp(600),
    );
    rg.service = ServiceKey::context(CTX).with_rating_group(7);
    let g = l.reserve(rg).await.expect("reserve rg");
    assert!(
        matches!(
            g,
            ReserveOutcome::Granted(Grant {
                units: 30,
                amount: Money(60),
                ..
            })
        ),
        "{g:?}"
    );
    let again = l
        .reserve(reserve(key("g1", 9), "15550000013", "g1", None, exp(600)))
        .await;
    assert!(
        matches!(again, Err(LedgerError::ReservationOpen { .. })),
        "{again:?}"
    );
    let rel = ReleaseRequest {
        key: key("g1", 1),
        session_ref: "g1".into(),
        service: None,
        cdr: Some(serde_json::json!({"cause": "abort"})),
    };
    let r = l.release(rel.clone()).await.expect("release");
    assert_eq!(
        r,
        Released {
            reservations: 2,
            amount: Money(120),
            units: 0
        }
    );
    assert_eq!(l.release(rel).await.expect("replay"), r);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM charging_records WHERE session_ref = 'g1'"
        )
        .await,
        2
    );
    assert_eq!(
        l.commit(commit(key("g1", 2), "g1", 5, false, true, exp(0)))
            .await
            .expect("late"),
        CommitOutcome::Refused(Refusal::NoReservation)
    );

    // Many ops in flight at once (they share batches): duplicates of one key inside a batch
    // apply once and answer the same.
    let mut tasks = Vec::new();
    for i in 0..10u32 {
        let l = l.clone();
        let s = format!("gc{}", i.min(7));
        tasks.push(tokio::spawn(async move {
            l.reserve(reserve(key(&s, 0), "15550000013", &s, None, exp(600)))
                .await
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.expect("task").expect("reserve"));
    }
    for o in &outs {
        assert!(
            matches!(
                o,
                ReserveOutcome::Granted(Grant {
                    units: 60,
                    amount: Money(60),
                    ..
                })
            ),
            "{o:?}"
        );
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM v_open_reservations WHERE session_ref LIKE 'gc%'"
        )
        .await,
        8
    );
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let l = l.clone();
        let s = format!("gc{i}");
        tasks.push(tokio::spawn(async move {
            l.commit(commit(key(&s, 1), &s, 30, false, true, exp(0)))
                .await
        }));
    }
    for t in tasks {
        let c = t.await.expect("task").expect("commit");
        assert_eq!(
            c,
            CommitOutcome::Committed(Committed {
                charged: Money(30),
                from_allowance: 0,
                unbilled: Money(0),
                next: None,
                session_open: Some(0)
            })
        );
    }
    let b = l.balance(&sub("15550000013")).await.expect("balance");
    assert_eq!((b.posted, b.reserved), (Money(760), Money(0)));

    // Expiry returns allowance units too; the allowance is then usable by a direct debit.
    let im = |k: RequestKey, s: &str, n: u64| ReserveRequest {
        key: k,
        subscriber: sub("15550000014"),
        service: ServiceKey::context(IM),
        unit: UnitType::Units,
        requested_units: Some(n),
        session_ref: s.into(),
        expires_at: exp(30),
        tcc: None,
    };
    let g = l
        .reserve(im(key("h1", 0), "h1", 15))
        .await
        .expect("reserve");
    assert_eq!(
        g,
        ReserveOutcome::Granted(Grant {
            units: 15,
            from_allowance: 10,
            amount: Money(50),
            final_grant: false,
            expires_at: exp(30),
            quota: Default::default(),
            final_unit: Default::default(),
        })
    );
    clock.advance_seconds(31);
    let ex = l.expire(clock.now()).await.expect("expire");
    assert_eq!((ex.expired, ex.amount, ex.units), (1, Money(50), 10));
    let d = l
        .direct_debit(DirectDebitRequest {
            key: key("h2", 0),
            subscriber: sub("15550000014"),
            service: ServiceKey::context(IM),
            unit: UnitType::Units,
            units: 12,
            cdr: None,
        })
        .await
        .expect("dd");
    assert_eq!(
        d,
        DirectDebitOutcome::Debited {
            units: 12,
            from_allowance: 10,
            charged: Money(20)
        }
    );

    // A final commit says what else of the session is still open (a CCR-T skips its release
    // only when that is nothing): two services, the first final commit leaves one open.
    let rg20 = ServiceKey {
        rating_group: Some(20),
        ..ServiceKey::context(CTX)
    };
    for (n, svc) in [(0u32, ServiceKey::context(CTX)), (1, rg20.clone())] {
        let r = ReserveRequest {
            service: svc,
            ..reserve(key("two", n), "15550000013", "two", Some(60), exp(600))
        };
        assert!(matches!(
            l.reserve(r).await.expect("reserve"),
            ReserveOutcome::Granted(_)
        ));
    }
    let first = l
        .commit(commit(key("two", 2), "two", 10, false, true, exp(0)))
        .await
        .expect("final 1");
    assert!(
        matches!(
            first,
            CommitOutcome::Committed(Committed {
                session_open: Some(1),
                ..
            })
        ),
        "{first:?}"
    );
    let second = l
        .commit(CommitRequest {
            service: rg20,
            ..commit(key("two", 3), "two", 10, false, true, exp(0))
        })
        .await
        .expect("final 2");
    assert!(
        matches!(
            second,
            CommitOutcome::Committed(Committed {
                session_open: Some(0),
                ..
            })
        ),
        "{second:?}"
    );

    // U+0000 in a session or subscriber is refused before it reaches either store (SQLite's
    // JSON functions would cut "nul\0a" and "nul\0b" to the same "nul").
    for (session, msisdn) in [("nul\0a", "15550000014"), ("nul", "15550000014\0")] {
        let r = l
            .reserve(reserve(
                key(session, 0),
                msisdn,
                session,
                Some(60),
                exp(300),
            ))
            .await;
        assert!(
            matches!(r, Err(LedgerError::InvalidRequest { .. })),
            "{r:?}"
        );
    }

    let rep = admin::verify(&db).await.expect("verify");
    assert!(rep.is_consistent(), "{:?}", rep.problems);
    drop(l);
    drop(ledger);
    db.pool.close().await;
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_edges_sqlite() {
    edges(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_edges_postgres() {
    if let Some(db) = TestDb::postgres("conformance_edges_postgres").await {
        edges(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres() {
    if let Some(db) = TestDb::postgres("conformance_postgres").await {
        suite(db).await;
    }
}
