//! Credit control end to end: the spawned `tollgate serve` answers CCRs over TCP from a real
//! ledger (SQLite and PostgreSQL), and after every flow `tollgate ledger verify` passes and the
//! balance is what the tariff says.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, AvpCode, Flags, ResultCode};

/// Runs `body` against a fresh store with the test subscriber (EUR `balance`) and a server.
macro_rules! on_both_backends {
    ($name:ident, $balance:expr, |$store:ident, $server:ident, $client:ident| $body:block) => {
        mod $name {
            use super::*;
            async fn run(backend: Backend) {
                let Some($store) = Store::new(backend).await else { return };
                provision(&$store, $balance);
                let $server = Server::start(&$store, &[]);
                let $client = Client::connect($server.diameter, "im.test").await;
                $body
                finish($client, $server, $store).await;
            }
            #[tokio::test]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
}

fn balance(store: &Store) -> (i64, i64) {
    let a = store.account("alice");
    (
        a["balance_minor"].as_i64().unwrap(),
        a["reserved_minor"].as_i64().unwrap(),
    )
}

on_both_backends!(session_charging_scur, "10.00", |store, server, c| {
    let sid = "im.test;1;scur";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1))
        .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let m = answer_mscc(&a, 10);
    assert_eq!(granted(&m), Some(60));
    assert_eq!(result_in(&m), Some(2001));
    assert!(m.iter().any(|x| x.is(VALIDITY_TIME)));
    assert_eq!(balance(&store), (1000, 60));

    let u = c.ccr(sid, 2, 1).with(mscc(
        Some(10),
        Some(Avp::from_u32(CC_TIME, 60)),
        Some(Avp::from_u32(CC_TIME, 42)),
        Some(4),
    ));
    let a = c.ask(u).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(granted(&answer_mscc(&a, 10)), Some(60));
    assert_eq!(balance(&store), (958, 60));

    let t = c
        .ccr(sid, 3, 2)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(TERMINATION_CAUSE, 1))
        .with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 30)),
            Some(2),
        ));
    let a = c.ask(t).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    // Cost-Information of this request: 30 s × 0.01.
    let cost = a.find(COST_INFORMATION).unwrap().members().unwrap();
    let uv = cost.iter().find(|x| x.is(UNIT_VALUE)).unwrap();
    assert_eq!(uv.member(VALUE_DIGITS).unwrap().unwrap().i64().unwrap(), 30);
    assert_eq!(uv.member(EXPONENT).unwrap().unwrap().i32().unwrap(), -2);
    assert_eq!(balance(&store), (928, 0));

    // The session is over: another update is 5002.
    let late = c
        .ccr(sid, 2, 3)
        .with(mscc(Some(10), None, Some(Avp::from_u32(CC_TIME, 5)), None));
    assert_eq!(
        c.ask(late).await.result_code(),
        Some(ResultCode::UNKNOWN_SESSION_ID)
    );
});

on_both_backends!(reserve_then_debit_ecur, "10.00", |store, server, c| {
    let sid = "im.test;2;ecur";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(2, "sip:alice@example.com"))
        .with(mscc(
            Some(1),
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 5)),
            None,
            None,
        ));
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(granted(&answer_mscc(&a, 1)), Some(5));
    assert_eq!(balance(&store), (1000, 25));
    let t = c
        .ccr(sid, 3, 1)
        .with(subscription(2, "sip:alice@example.com"))
        .with(mscc(
            Some(1),
            None,
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 3)),
            Some(2),
        ));
    let a = c.ask(t).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(balance(&store), (985, 0));
    assert!(a.find(REMAINING_BALANCE).is_some());

    // Zero usage is allowed: everything returns.
    let sid = "im.test;2;ecur-zero";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(
            Some(1),
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 4)),
            None,
            None,
        ));
    assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::SUCCESS));
    let t = c.ccr(sid, 3, 1).with(mscc(
        Some(1),
        None,
        Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 0)),
        Some(2),
    ));
    assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(balance(&store), (985, 0));
});

on_both_backends!(immediate_events_iec, "10.00", |store, server, c| {
    let debit = c
        .ccr("im.test;3;debit", 4, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(REQUESTED_ACTION, 0))
        .with(mscc(
            None,
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 2)),
            None,
            None,
        ));
    let a = c.ask(debit).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let m = a
        .find(MULTIPLE_SERVICES_CREDIT_CONTROL)
        .unwrap()
        .members()
        .unwrap();
    assert_eq!(granted(&m), Some(2));
    assert_eq!(balance(&store), (990, 0));

    let refund = c
        .ccr("im.test;3;refund", 4, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(REQUESTED_ACTION, 1))
        .with(mscc(
            None,
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 1)),
            None,
            None,
        ));
    assert_eq!(c.ask(refund).await.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(balance(&store), (995, 0));

    let check = c
        .ccr("im.test;3;check", 4, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(REQUESTED_ACTION, 2));
    let a = c.ask(check).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(
        a.find(CHECK_BALANCE_RESULT).unwrap().enumerated().unwrap(),
        0
    );

    let price = c
        .ccr("im.test;3;price", 4, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(REQUESTED_ACTION, 3))
        .with(mscc(
            None,
            Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 4)),
            None,
            None,
        ));
    let a = c.ask(price).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let cost = a.find(COST_INFORMATION).unwrap().members().unwrap();
    assert_eq!(
        cost.iter()
            .find(|x| x.is(CURRENCY_CODE))
            .unwrap()
            .u32()
            .unwrap(),
        978
    );
    let uv = cost.iter().find(|x| x.is(UNIT_VALUE)).unwrap();
    assert_eq!(uv.member(VALUE_DIGITS).unwrap().unwrap().i64().unwrap(), 20);
    assert_eq!(balance(&store), (995, 0), "enquiries change nothing");

    // EVENT without Requested-Action → 5005 naming it.
    let bad = c
        .ccr("im.test;3;bad", 4, 0)
        .with(subscription(0, "15550000001"));
    let a = c.ask(bad).await;
    assert_eq!(a.result_code(), Some(ResultCode::MISSING_AVP));
    let f = a.find(FAILED_AVP).unwrap().members().unwrap();
    assert!(f[0].is(REQUESTED_ACTION));
});

on_both_backends!(
    refusals_and_their_result_codes,
    "0.30",
    |store, server, c| {
        // A grant that uses up the balance carries Final-Unit-Indication TERMINATE.
        let i = c
            .ccr("im.test;4;last", 1, 0)
            .with(subscription(0, "15550000001"))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        let a = c.ask(i).await;
        assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
        let m = answer_mscc(&a, 10);
        assert_eq!(granted(&m), Some(30));
        assert_eq!(
            final_unit_action(&m),
            Some(0),
            "FUI TERMINATE on the last grant"
        );

        // Nothing left: 4012 at command level, nothing reserved.
        let i = c
            .ccr("im.test;4;broke", 1, 0)
            .with(subscription(0, "15550000001"))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        assert_eq!(
            c.ask(i).await.result_code(),
            Some(ResultCode::CREDIT_LIMIT_REACHED)
        );
        let e = c
            .ccr("im.test;4;broke-e", 4, 0)
            .with(subscription(0, "15550000001"))
            .with(Avp::from_enum(REQUESTED_ACTION, 0))
            .with(mscc(
                None,
                Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 1)),
                None,
                None,
            ));
        assert_eq!(
            c.ask(e).await.result_code(),
            Some(ResultCode::CREDIT_LIMIT_REACHED)
        );
        assert_eq!(balance(&store), (30, 30));

        // Unknown subscriber → 5030; unknown service context → 5031 with Failed-AVP.
        let i = c
            .ccr("im.test;4;who", 1, 0)
            .with(subscription(0, "19999999999"))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::USER_UNKNOWN));
        let mut i = c
            .ccr("im.test;4;what", 1, 0)
            .with(subscription(0, "15550000001"))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        i.avps.retain(|a| !a.is(SERVICE_CONTEXT_ID));
        i.avps.insert(
            5,
            Avp::from_str(SERVICE_CONTEXT_ID, "32299@unknown.example"),
        );
        let a = c.ask(i).await;
        assert_eq!(a.result_code(), Some(ResultCode::RATING_FAILED));
        assert!(a.find(FAILED_AVP).is_some());

        // CCR-U and CCR-T for a session nobody opened → 5002.
        let u = c.ccr("im.test;4;ghost", 2, 1).with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 5)),
            None,
        ));
        assert_eq!(
            c.ask(u).await.result_code(),
            Some(ResultCode::UNKNOWN_SESSION_ID)
        );
        let t = c.ccr("im.test;4;ghost", 3, 2);
        assert_eq!(
            c.ask(t).await.result_code(),
            Some(ResultCode::UNKNOWN_SESSION_ID)
        );

        // End the first session using more than granted: charged within what credit allows.
        let t = c.ccr("im.test;4;last", 3, 1).with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 30)),
            Some(2),
        ));
        assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(balance(&store), (0, 0));
    }
);

on_both_backends!(
    retransmissions_never_charge_twice,
    "10.00",
    |store, server, c| {
        let sid = "im.test;5;retx";
        let i = c
            .ccr(sid, 1, 0)
            .with(subscription(0, "15550000001"))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        let first = c.ask(i.clone()).await;
        // Same Session-Id and CC-Request-Number with a new End-to-End id: the ledger's key, not
        // the peer layer's duplicate cache, must recognise it.
        let mut again = i.clone();
        again.header.flags = again.header.flags.with(Flags::RETRANSMITTED, true);
        let second = c.ask(again).await;
        assert_eq!(second.result_code(), first.result_code());
        assert_eq!(granted(&answer_mscc(&second, 10)), Some(60));
        assert_eq!(balance(&store), (1000, 60));

        let t = c.ccr(sid, 3, 1).with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 50)),
            Some(2),
        ));
        let a1 = c.ask(t.clone()).await;
        let mut t2 = t.clone();
        t2.header.flags = t2.header.flags.with(Flags::RETRANSMITTED, true);
        let a2 = c.ask(t2).await;
        assert_eq!(a1.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(a2.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(balance(&store), (950, 0));

        let e = c
            .ccr("im.test;5;iec", 4, 0)
            .with(subscription(0, "15550000001"))
            .with(Avp::from_enum(REQUESTED_ACTION, 0))
            .with(mscc(
                None,
                Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 2)),
                None,
                None,
            ));
        for _ in 0..3 {
            assert_eq!(
                c.ask(e.clone()).await.result_code(),
                Some(ResultCode::SUCCESS)
            );
        }
        assert_eq!(balance(&store), (940, 0));
    }
);

on_both_backends!(two_rating_groups_in_one_ccr, "10.00", |store, server, c| {
    let sid = "im.test;6;two";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1))
        .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None))
        .with(mscc(Some(20), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(granted(&answer_mscc(&a, 10)), Some(60));
    assert_eq!(granted(&answer_mscc(&a, 20)), Some(60));
    // RG 10 at 0.01/s, RG 20 at its own 0.02/s.
    assert_eq!(balance(&store), (1000, 180));
    let t = c
        .ccr(sid, 3, 1)
        .with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 10)),
            Some(2),
        ))
        .with(mscc(
            Some(20),
            None,
            Some(Avp::from_u32(CC_TIME, 10)),
            Some(2),
        ));
    let a = c.ask(t).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(balance(&store), (970, 0));
});

// A CCR-T that reports one of two rating groups: the reported one is posted, the other's
// reservation is released by the same CCR-T (a final commit that leaves something open does
// not skip the release).
on_both_backends!(
    ccr_t_releases_what_it_does_not_report,
    "10.00",
    |store, server, c| {
        let sid = "im.test;6;half";
        let i = c
            .ccr(sid, 1, 0)
            .with(subscription(0, "15550000001"))
            .with(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1))
            .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None))
            .with(mscc(Some(20), Some(Avp::from_u32(CC_TIME, 60)), None, None));
        assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(balance(&store), (1000, 180));
        let t = c.ccr(sid, 3, 1).with(mscc(
            Some(10),
            None,
            Some(Avp::from_u32(CC_TIME, 10)),
            Some(2),
        ));
        assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));
        // 10 s of RG 10 charged; RG 20's 1.20 back.
        assert_eq!(balance(&store), (990, 0));
    }
);

on_both_backends!(
    ro_and_oma_im_payloads_land_in_the_charging_record,
    "10.00",
    |store, server, c| {
        let sid = "im.test;7;oma";
        let service_information = Avp::grouped(
            SERVICE_INFORMATION,
            &[
                Avp::grouped(
                    IMS_INFORMATION,
                    &[
                        Avp::grouped(EVENT_TYPE, &[Avp::from_str(SIP_METHOD, "REGISTER")]),
                        Avp::from_enum(ROLE_OF_NODE, 1),
                        Avp::from_enum(NODE_FUNCTIONALITY, 6),
                        Avp::from_str(CALLING_PARTY_ADDRESS, "sip:alice@example.com"),
                    ],
                ),
                Avp::grouped(
                    SERVICE_GENERIC_INFORMATION,
                    &[
                        Avp::from_enum(APPLICATION_SERVICE_TYPE, 102),
                        Avp::from_u32(APPLICATION_SESSION_ID, 77),
                    ],
                ),
                Avp::grouped(
                    IM_INFORMATION,
                    &[
                        Avp::from_u32(TOTAL_NUMBER_OF_MESSAGES_SENT, 3),
                        Avp::from_u32(NUMBER_OF_MESSAGES_SUCCESSFULLY_SENT, 2),
                    ],
                ),
            ],
        );
        let uei = Avp::grouped(
            USER_EQUIPMENT_INFO,
            &[
                Avp::from_enum(USER_EQUIPMENT_INFO_TYPE, 0),
                Avp::new(
                    USER_EQUIPMENT_INFO_VALUE,
                    bytes::Bytes::from_static(b"3569990123456789"),
                ),
            ],
        );
        for kind in 0..5 {
            // Every Subscription-Id type is accepted (unknown ones are 5030, not 5001).
            let data = [
                "19990000001",
                "001010123456789",
                "sip:x@y",
                "x@nai.example",
                "private-x",
            ][kind as usize];
            let i = c
                .ccr(&format!("{sid}-{kind}"), 4, 0)
                .with(subscription(kind, data))
                .with(Avp::from_enum(REQUESTED_ACTION, 2));
            assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::USER_UNKNOWN));
        }
        let i = c
            .ccr(sid, 1, 0)
            .with(subscription(2, "sip:alice@example.com"))
            .with(mscc(
                Some(1),
                Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 3)),
                None,
                None,
            ))
            .with(uei.clone())
            .with(service_information.clone());
        assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::SUCCESS));
        let t = c
            .ccr(sid, 3, 1)
            .with(subscription(2, "sip:alice@example.com"))
            .with(mscc(
                Some(1),
                None,
                Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 2)),
                Some(2),
            ))
            .with(uei)
            .with(service_information);
        assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));

        sqlx::any::install_default_drivers();
        use sqlx::Connection;
        let mut db = sqlx::AnyConnection::connect(&store.url).await.unwrap();
        let (payload,): (String,) = sqlx::query_as(
            "SELECT CAST(payload AS TEXT) FROM charging_records WHERE session_ref = $1",
        )
        .bind(sid)
        .fetch_one(&mut db)
        .await
        .unwrap();
        db.close().await.ok();
        for needle in [
            "IMS-Information",
            "REGISTER",
            "Application-Service-Type",
            "RETRIEVAL",
            "Total-Number-Of-Messages-Sent",
            "Number-Of-Messages-Successfully-Sent",
            "User-Equipment-Info-Value",
        ] {
            assert!(
                payload.contains(needle),
                "charging record lacks {needle}: {payload}"
            );
        }
        let _ = AvpCode::base(0);
    }
);

on_both_backends!(denied_and_free_services, "10.00", |store, server, c| {
    // A free service (zero price) needs no credit control: 4011, nothing stays reserved.
    store.set_tariff(
        &Tariff::new("32260@3gpp.org", "seconds", "0")
            .rating_group(99)
            .quantum(60),
    );
    let i = c
        .ccr("im.test;8;free", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(99), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    assert_eq!(
        c.ask(i).await.result_code(),
        Some(ResultCode::CREDIT_CONTROL_NOT_APPLICABLE)
    );
    assert_eq!(balance(&store), (1000, 0));

    // A blocked account is refused by policy: 4010.
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let mut db = sqlx::AnyConnection::connect(&store.url).await.unwrap();
    sqlx::query("UPDATE accounts SET status = 'blocked' WHERE id = 'alice'")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.ok();
    let i = c
        .ccr("im.test;8;blocked", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    assert_eq!(
        c.ask(i).await.result_code(),
        Some(ResultCode::END_USER_SERVICE_DENIED)
    );
    assert_eq!(balance(&store), (1000, 0));
});

/// A retransmission after a restart still replays the stored answer (the idempotency key is
/// in the ledger, not in the process).
#[tokio::test]
async fn retransmission_after_restart_is_not_charged_again() {
    let Some(store) = Store::new(Backend::Sqlite).await else {
        return;
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let c = Client::connect(server.diameter, "im.test").await;
    let sid = "im.test;9;restart";
    let i = c
        .ccr(sid, 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(10), Some(Avp::from_u32(CC_TIME, 60)), None, None));
    assert_eq!(c.ask(i).await.result_code(), Some(ResultCode::SUCCESS));
    let t = c.ccr(sid, 3, 1).with(mscc(
        Some(10),
        None,
        Some(Avp::from_u32(CC_TIME, 40)),
        Some(2),
    ));
    let before = c.ask(t.clone()).await;
    assert_eq!(before.result_code(), Some(ResultCode::SUCCESS));
    c.close().await;
    server.stop();

    let server = Server::start(&store, &[]);
    let c = Client::connect(server.diameter, "im.test").await;
    let mut again = t;
    again.header.flags = again.header.flags.with(Flags::RETRANSMITTED, true);
    let after = c.ask(again).await;
    assert_eq!(after.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(answer_mscc(&after, 10), answer_mscc(&before, 10));
    assert_eq!(balance(&store), (960, 0));
    c.close().await;
    server.stop();
    store.verify();
    store.drop_store().await;
}
