//! Two `tollgate serve` processes on one PostgreSQL, each driven over Diameter by its own
//! `tollgate load` with 64 concurrent session flows, all charging the same 10 accounts, whose
//! credit runs out during the run. Correctness across nodes comes from the database's row locks,
//! not from either process (docs/several-nodes.md), so afterwards:
//! - `ledger verify` passes (every balance is the sum of its entries);
//! - nothing is left reserved and no account is below its credit limit;
//! - no request key was charged twice, and every post charged exactly its usage at the tariff
//!   (0.01 EUR/s), less what the credit floor left unbilled;
//! - the money the accounts lost is exactly what the posts charged.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::process::{Command, Stdio};

const ACCOUNTS: u64 = 10;
const CONCURRENCY: &str = "64";

/// `tollgate load`'s subscriber numbering (src/load.rs `subscriber`).
fn msisdn(i: u64) -> String {
    format!("{}", 1_555_100_000u64 + i)
}

/// An account as provisioned, minor units.
struct Opening {
    balance: i64,
    credit_limit: i64,
}

/// Account `i` as provisioned: small enough that the concurrent sessions exhaust it during
/// the run; every other account may go 1.50 below zero.
fn opening(i: u64) -> Opening {
    Opening {
        balance: 800 + 100 * i as i64,
        credit_limit: if i.is_multiple_of(2) { 0 } else { 150 },
    }
}

fn decimal(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_charge_shared_accounts_exactly() {
    let Some(store) = Store::new(Backend::Postgres).await else {
        return;
    };
    for i in 0..ACCOUNTS {
        let Opening {
            balance,
            credit_limit,
        } = opening(i);
        store.run_ok(&[
            "account",
            "create",
            "--id",
            &format!("acct{i}"),
            "--currency",
            "EUR",
            "--balance",
            &decimal(balance),
            "--credit-limit",
            &decimal(credit_limit),
            "--subscription",
            &format!("e164:{}", msisdn(i)),
        ]);
    }
    store.set_tariff(&Tariff::new("32260@3gpp.org", "seconds", "0.01").min_grant(1));

    let nodes = [Server::start(&store, &[]), Server::start(&store, &[])];
    let loads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["load", "--server", &node.diameter.to_string()])
                .args(["--flow", "session", "--concurrency", CONCURRENCY])
                .args(["--duration", "3s", "--subscribers", &ACCOUNTS.to_string()])
                .args(["--quiet", "--json"])
                .arg(store.dir.join(format!("load{n}.json")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut answered = 0;
    let mut refused = 0;
    for (n, load) in loads.into_iter().enumerate() {
        let out = load.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "load on node {n}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.dir.join(format!("load{n}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["errors"].as_u64(), Some(0), "node {n}: {s}");
        // Grants, and refusals once the credit is gone: nothing else.
        for (code, count) in s["answers"].as_object().unwrap() {
            assert!(
                code == "2001" || code == "4012",
                "node {n} answered {count} × {code}: {s}"
            );
        }
        answered += s["answers"]["2001"].as_u64().unwrap_or(0);
        refused += s["answers"]["4012"].as_u64().unwrap_or(0);
    }
    assert!(answered > 0, "no CCR was granted");
    assert!(
        refused > 0,
        "the accounts never ran out: the test tests nothing"
    );
    for node in nodes {
        node.stop();
    }

    store.verify();
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM v_open_reservations")
            .await,
        0,
        "every flow ended: nothing stays reserved"
    );
    assert_eq!(
        store
            .scalar(
                "SELECT COUNT(*) FROM accounts a WHERE a.balance - a.reserved < -a.credit_limit"
            )
            .await,
        0,
        "an account went below its credit limit"
    );
    assert_eq!(
        store
            .scalar(
                "SELECT COUNT(*) FROM (SELECT request_key FROM v_entries WHERE kind = 'post' \
                 GROUP BY request_key HAVING COUNT(*) > 1) t"
            )
            .await,
        0,
        "a request key was charged twice"
    );
    assert_eq!(
        store
            .scalar(
                "SELECT COUNT(*) FROM v_entries WHERE kind = 'post' \
                 AND -amount + unbilled <> used_units"
            )
            .await,
        0,
        "a post charged other than its usage at 0.01/s"
    );
    let opening_total: i64 = (0..ACCOUNTS).map(|i| opening(i).balance).sum();
    let balances = store
        .scalar("SELECT CAST(SUM(balance) AS BIGINT) FROM accounts")
        .await;
    let charged = store
        .scalar(
            "SELECT CAST(COALESCE(SUM(-amount), 0) AS BIGINT) FROM v_entries WHERE kind = 'post'",
        )
        .await;
    assert!(charged > 0);
    assert_eq!(
        opening_total - balances,
        charged,
        "the accounts lost exactly what the posts charged"
    );
    store.drop_store().await;
}
