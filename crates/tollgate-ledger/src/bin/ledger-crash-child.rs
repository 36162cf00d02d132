//! Test helper for tests/crash.rs: runs ledger operations against PostgreSQL and prints
//! `committed KEY` after each commit returned, until killed. Usage:
//! `ledger-crash-child DATABASE_URL RUN_PREFIX`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use tollgate_ledger::{LedgerConfig, SqlLedger};
use tollgate_ocs::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        return Err("usage: ledger-crash-child DATABASE_URL RUN_PREFIX".into());
    };
    let ledger: Arc<dyn Ledger> =
        Arc::new(SqlLedger::connect(&url, LedgerConfig::default(), Arc::new(SystemClock)).await?);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for w in 0..4u32 {
        let l = ledger.clone();
        let tx = tx.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            for n in 0u32.. {
                let session = format!("{prefix}-{w}-{n}");
                let sub = SubscriptionId::e164(format!("1555000{:04}", (w + n) % 4));
                let svc = ServiceKey::context("32260@3gpp.org");
                let exp = SystemClock.now().plus_seconds(600);
                let k0 = RequestKey::new("crash", &session, 0);
                let r = ReserveRequest {
                    key: k0.clone(),
                    subscriber: sub,
                    service: svc.clone(),
                    unit: UnitType::Seconds,
                    requested_units: Some(10),
                    session_ref: session.clone(),
                    expires_at: exp,
                    tcc: None,
                };
                if l.reserve(r).await.is_err() {
                    continue;
                }
                let _ = tx.send(k0.to_key_string());
                let k1 = RequestKey::new("crash", &session, 1);
                let c = CommitRequest {
                    key: k1.clone(),
                    session_ref: session.clone(),
                    service: svc,
                    used: UsedUnits::of(UnitType::Seconds, 7),
                    next: None,
                    final_commit: true,
                    cdr: None,
                };
                if l.commit(c).await.is_ok() {
                    let _ = tx.send(k1.to_key_string());
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    while let Some(k) = rx.recv().await {
        writeln!(out, "committed {k}")?;
        out.flush()?;
    }
    Ok(())
}
