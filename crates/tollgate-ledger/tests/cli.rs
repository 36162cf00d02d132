//! The CLI run functions end to end on a fresh SQLite store (and PostgreSQL when available):
//! provisioning, top-up, show --json, tariffs, verify, and one-line input errors.

mod common;

use clap::Parser;
use common::TestDb;
use tollgate_ledger::cli::{self, AccountCmd, LedgerCmd, MigrateCmd, TariffCmd};
use tollgate_ledger::AdminError;
use tollgate_ocs::SystemClock;

/// Stand-in for the root binary's command enum.
#[derive(Debug, Parser)]
enum Tollgate {
    Migrate(MigrateCmd),
    Account(AccountCmd),
    Tariff(TariffCmd),
    Ledger(LedgerCmd),
}

async fn run(args: &[&str]) -> (Result<(), AdminError>, String) {
    let cmd = Tollgate::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
        .expect("parses");
    let mut out = Vec::new();
    let r = match &cmd {
        Tollgate::Migrate(c) => cli::run_migrate(c, &mut out).await,
        Tollgate::Account(c) => cli::run_account(c, &SystemClock, &mut out).await,
        Tollgate::Tariff(c) => cli::run_tariff(c, &SystemClock, &mut out).await,
        Tollgate::Ledger(c) => cli::run_ledger(c, &mut out).await,
    };
    (r, String::from_utf8(out).expect("utf8"))
}

async fn cli_flow(tdb: TestDb) {
    let url = tdb.url.clone();
    let u = url.as_str();
    let (r, _) = run(&["migrate", "--database-url", u]).await;
    r.expect("migrate");
    let (r, out) = run(&[
        "account",
        "create",
        "--database-url",
        u,
        "--id",
        "alice",
        "--currency",
        "EUR",
        "--balance",
        "10.00",
        "--subscription",
        "e164:15550000001",
        "--subscription",
        "sip:alice@example.com",
        "--allowance",
        "units:100:2099-01-01",
    ])
    .await;
    r.expect("create");
    assert!(out.contains("balance 10.00"), "{out}");
    let (r, _) = run(&[
        "account",
        "topup",
        "--database-url",
        u,
        "--id",
        "alice",
        "--amount",
        "5.00",
    ])
    .await;
    r.expect("topup");
    let (r, out) = run(&[
        "account",
        "show",
        "--database-url",
        u,
        "--id",
        "alice",
        "--json",
    ])
    .await;
    r.expect("show");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["balance"], "15.00");
    assert_eq!(v["available"], "15.00");
    assert_eq!(v["allowances"][0]["remaining"], 100);
    let (r, out) = run(&["account", "list", "--database-url", u]).await;
    r.expect("list");
    assert!(out.contains("sip:alice@example.com"), "{out}");
    let (r, out) = run(&[
        "tariff",
        "set",
        "--database-url",
        u,
        "--service-context",
        "32260@3gpp.org",
        "--rating-group",
        "10",
        "--unit",
        "seconds",
        "--price",
        "0.01",
        "--quantum",
        "60",
        "--min-grant",
        "10",
    ])
    .await;
    r.expect("tariff");
    assert!(out.contains("0.01 EUR"), "{out}");
    let (r, out) = run(&["tariff", "list", "--database-url", u]).await;
    r.expect("tariff list");
    assert!(out.contains("rating-group 10"), "{out}");
    let (r, out) = run(&["ledger", "verify", "--database-url", u]).await;
    r.expect("verify");
    assert!(out.contains("0 problems"), "{out}");
    // Bad input: one line that says what to fix, nothing written.
    let (r, _) = run(&[
        "account",
        "create",
        "--database-url",
        u,
        "--id",
        "bob",
        "--balance",
        "10,00",
        "--subscription",
        "e164:1",
    ])
    .await;
    let e = r.expect_err("bad amount").to_string();
    assert!(
        e.contains("write a decimal like 10.00") && !e.contains('\n'),
        "{e}"
    );
    let (r, _) = run(&[
        "account",
        "create",
        "--database-url",
        u,
        "--id",
        "bob",
        "--balance",
        "1",
        "--subscription",
        "tel:1",
    ])
    .await;
    assert!(r.expect_err("bad sub").to_string().contains("e164:DIGITS"));
    let (r, _) = run(&[
        "account",
        "topup",
        "--database-url",
        u,
        "--id",
        "nobody",
        "--amount",
        "1",
    ])
    .await;
    assert!(r
        .expect_err("unknown")
        .to_string()
        .contains("no account nobody"));
    tdb.drop_db().await;
}

#[tokio::test]
async fn cli_sqlite() {
    cli_flow(TestDb::sqlite()).await;
}

#[tokio::test]
async fn cli_postgres() {
    if let Some(tdb) = TestDb::postgres("cli_postgres").await {
        cli_flow(tdb).await;
    }
}

#[test]
fn default_database_url_is_in_the_data_dir() {
    let u = cli::default_database_url(std::path::Path::new("./tollgate-data"));
    assert_eq!(u, "sqlite://./tollgate-data/ledger.sqlite3");
}
