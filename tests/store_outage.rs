//! A ledger database that goes away: requests are answered with the configured Result-Code
//! (5012 UNABLE_TO_COMPLY, or 3004 TOO_BUSY) instead of hanging, /ready says 503, and service
//! resumes by itself when the database comes back. Uses its own PostgreSQL instance.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, ResultCode};

struct OwnPostgres {
    url: String,
    data: String,
}

impl OwnPostgres {
    fn start() -> Option<OwnPostgres> {
        if !tollgate_testkit::present(
            std::env::var(PG_ENV).is_ok(),
            &format!("PostgreSQL ({PG_ENV})"),
            "scripts/test starts one with scripts/start-postgres and sets it",
        ) {
            return None;
        }
        let out = Command::new(repo_root().join("scripts/start-postgres"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let data = err
            .split("(data ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap()
            .to_string();
        Some(OwnPostgres {
            url: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            data,
        })
    }

    fn pg_ctl(&self, args: &[&str]) {
        let uid = Command::new("id").arg("-u").output().unwrap();
        let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "tollgate-pg", "--", "pg_ctl"]);
            c
        } else {
            Command::new("pg_ctl")
        };
        let status = cmd
            .args(["-D", &self.data, "-w"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.pg_ctl(&["stop", "-m", "immediate"]));
    }
}

#[tokio::test]
async fn the_store_goes_away_and_comes_back() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("tollgate-outage"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store {
        url: pg.url.clone(),
        dir: dir.clone(),
        pg: None,
    };
    provision(&store, "10.00");
    let server = Server::start(&store, &[]);
    let c = Client::connect(server.diameter, "im.test").await;
    let check = |n: u32| {
        c.ccr(&format!("im.test;outage;{n}"), 4, 0)
            .with(subscription(0, "15550000001"))
            .with(Avp::from_enum(REQUESTED_ACTION, 0))
            .with(mscc(
                None,
                Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 1)),
                None,
                None,
            ))
    };
    assert_eq!(
        c.ask(check(0)).await.result_code(),
        Some(ResultCode::SUCCESS)
    );
    assert_eq!(server.http_get("/ready").0, 200);

    // The server closes every connection the pool holds (as on a failover or an operator's
    // pg_terminate_backend). A connection busy a moment ago is used without a ping, so the
    // next batch finds it dead: it must run again on a new connection, not fail the CCR.
    let out = Command::new("psql")
        .args([
            &pg.url,
            "-qAtc",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ])
        .output()
        .unwrap();
    let killed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && killed.trim().parse::<u32>().unwrap() > 0,
        "{killed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ask(check(100)).await.result_code(),
        Some(ResultCode::SUCCESS)
    );

    pg.pg_ctl(&["stop", "-m", "fast"]);
    let start = Instant::now();
    let a = c.ask(check(1)).await; // Client::ask fails the test after 10 s without an answer
    assert_eq!(a.result_code(), Some(ResultCode::UNABLE_TO_COMPLY), "{a:?}");
    println!("answered 5012 in {:?}", start.elapsed());
    assert_eq!(server.http_get("/ready").0, 503);
    assert_eq!(server.http_get("/health").0, 200);

    pg.pg_ctl(&["start", "-l", &format!("{}/../restart.log", pg.data)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 2;
    loop {
        let a = c.ask(check(n)).await;
        if a.result_code() == Some(ResultCode::SUCCESS) {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {a:?}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.http_get("/ready").0, 200);
    c.close().await;
    server.stop();
    // Two debits before the outage and one after it; the refused one charged nothing.
    assert_eq!(store.account("alice")["balance_minor"].as_i64(), Some(985));
    store.verify();
    let _ = std::fs::remove_dir_all(&dir);
}
