//! Running Tollgate as an operator would: the binary with no configuration in an empty
//! directory, /metrics and /health, and one precise line for every bad configuration.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tollgate_codec::codes::*;
use tollgate_codec::{Avp, ResultCode};

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn starts_with_no_configuration_in_an_empty_directory() {
    let dir = std::env::temp_dir().join(unique("tollgate-empty"));
    std::fs::create_dir_all(&dir).unwrap();
    // Only the ports differ from the defaults: tests never bind fixed ports.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .current_dir(&dir)
        .env_remove("TOLLGATE_DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let (diameter, admin) = parse_listening(&line);
    let server = Server {
        child,
        diameter,
        admin,
    };
    assert!(
        dir.join("tollgate-data").is_dir(),
        "embedded store under ./tollgate-data"
    );

    assert_eq!(server.http_get("/health").0, 200);
    assert_eq!(server.http_get("/ready").0, 200);
    let before = server.http_get("/metrics").1;
    assert_eq!(metric(&before, "tollgate_requests_total"), 0.0);

    let c = Client::connect(server.diameter, "im.test").await;
    let mut i = c
        .ccr("im.test;ops;1", 1, 0)
        .with(subscription(0, "15550000001"))
        .with(mscc(Some(1), Some(Avp::from_u32(CC_TIME, 30)), None, None));
    // The defaults: Origin-Host tollgate.localdomain, realm localdomain.
    i.avps.retain(|a| !a.is(DESTINATION_REALM));
    i.avps
        .insert(3, Avp::from_str(DESTINATION_REALM, "localdomain"));
    let a = c.ask(i).await;
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    assert_eq!(a.origin_host(), Some("tollgate.localdomain"));
    let mut t = c.ccr("im.test;ops;1", 3, 1).with(mscc(
        Some(1),
        None,
        Some(Avp::from_u32(CC_TIME, 10)),
        Some(2),
    ));
    t.avps.retain(|a| !a.is(DESTINATION_REALM));
    t.avps
        .insert(3, Avp::from_str(DESTINATION_REALM, "localdomain"));
    assert_eq!(c.ask(t).await.result_code(), Some(ResultCode::SUCCESS));

    let after = server.http_get("/metrics").1;
    assert_eq!(
        metric(&after, "tollgate_requests_total{command=\"Credit-Control\",cc_request_type=\"INITIAL\",result_code=\"2001\"}"),
        1.0,
        "{after}"
    );
    assert!(
        after.contains("tollgate_request_duration_seconds_bucket"),
        "{after}"
    );
    assert!(
        after.contains("tollgate_peers{state=\"ROpen\"} 1"),
        "{after}"
    );
    assert!(after.contains("tollgate_open_reservations 0"), "{after}");
    assert!(
        after.contains("tollgate_ledger_batch_size_bucket"),
        "{after}"
    );
    assert!(
        after.contains("tollgate_ledger_commit_seconds_bucket"),
        "{after}"
    );
    c.close().await;
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `tollgate ARGS` expecting failure; returns stderr, which must be one line.
fn run_in(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("TOLLGATE_LOG", "off")
        .output()
        .unwrap()
}

fn fails(args: &[&str], cwd: &std::path::Path) -> String {
    let out = run_in(args, cwd);
    assert!(!out.status.success(), "tollgate {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    err
}

#[test]
fn bad_configuration_gets_one_line_that_says_what_to_fix() {
    let dir = std::env::temp_dir().join(unique("tollgate-badcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tollgate.toml");

    std::fs::write(
        &file,
        "[diameter]\nlisten = \"127.0.0.1:0\"\norigin_hots = \"x\"\n",
    )
    .unwrap();
    let e = fails(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        e.contains("tollgate.toml:3") && e.contains("origin_hots"),
        "{e}"
    );
    let e = fails(&["serve", "--config", file.to_str().unwrap()], &dir);
    assert!(e.contains("origin_hots"), "{e}");

    std::fs::write(&file, "[diameter]\nlisten = \"not-an-address\"\n").unwrap();
    let e = fails(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        e.contains("tollgate.toml:2") && e.contains("address"),
        "{e}"
    );

    // Outbound peers: ADDRESS:PORT or ORIGIN-HOST=ADDRESS:PORT; anything else says both.
    std::fs::write(
        &file,
        "[diameter]\npeers = [\"10.0.0.2:3868\", \"ocs-b.example.net=10.0.0.3:3868\"]\n",
    )
    .unwrap();
    let out = run_in(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &file,
        "[diameter]\npeers = [\"ocs-b.example.net@10.0.0.3\"]\n",
    )
    .unwrap();
    let e = fails(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        e.contains("tollgate.toml:2") && e.contains("ORIGIN-HOST=ADDRESS:PORT"),
        "{e}"
    );
    let e = fails(&["serve", "--peer", "=10.0.0.3:3868"], &dir);
    assert!(e.contains("Origin-Host before '=' is empty"), "{e}");

    std::fs::write(&file, "[ledger]\nmax_connections = 2\nbatch_workers = 3\n").unwrap();
    let e = fails(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        e.contains("ledger.batch_workers") && e.contains("max_connections (2)"),
        "{e}"
    );

    let e = fails(&["serve", "--listen", "nowhere:99999"], &dir);
    assert!(e.contains("--listen"), "{e}");

    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let e = fails(
        &[
            "serve",
            "--listen",
            &port,
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            dir.join("d1").to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        e.contains("cannot listen") && e.contains(&port) && e.contains("--listen"),
        "{e}"
    );

    // Unreachable database.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://nobody@127.0.0.1:{dead}/none");
    let e = fails(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--database-url",
            &url,
        ],
        &dir,
    );
    assert!(
        e.contains("cannot open the ledger") && e.contains("--database-url"),
        "{e}"
    );

    // Unwritable data directory (a file where the directory should be).
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let e = fails(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            blocker.join("sub").to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        e.contains("data directory") && e.contains("--data-dir"),
        "{e}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_wireshark_dictionary_gets_one_line_naming_the_file_and_line() {
    let dir = std::env::temp_dir().join(unique("tollgate-badws"));
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let file = dir.join("tollgate.toml");

    // A path that is not there: check-config says which key and where the package puts it.
    let missing = dir.join("none").join("dictionary.xml");
    std::fs::write(
        &file,
        format!(
            "[diameter]\nwireshark_dictionary = {:?}\n",
            missing.to_str().unwrap()
        ),
    )
    .unwrap();
    let e = fails(&["check-config", file.to_str().unwrap()], &dir);
    assert!(
        e.contains("diameter.wireshark_dictionary") && e.contains("wireshark-common"),
        "{e}"
    );

    // A broken file included by the top file: the included file and its line.
    let top = dir.join("ws").join("dictionary.xml");
    std::fs::write(
        &top,
        "<!DOCTYPE dictionary [\n<!ENTITY TGPP SYSTEM \"TGPP.xml\">\n]>\n<dictionary>\n&TGPP;\n</dictionary>\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ws").join("TGPP.xml"),
        "<?xml version=\"1.0\"?>\n<vendor vendor-id=\"TGPP\" code=\"10415\"/>\n<avp name=\"X\" code=\"x1\"/>\n",
    )
    .unwrap();
    let e = fails(
        &["decode", "--wireshark-dictionary", top.to_str().unwrap()],
        &dir,
    );
    assert!(
        e.contains("--wireshark-dictionary") && e.contains("TGPP.xml:3:"),
        "{e}"
    );
    std::fs::write(
        &file,
        format!(
            "[diameter]\nwireshark_dictionary = {:?}\n",
            top.to_str().unwrap()
        ),
    )
    .unwrap();
    let e = fails(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        e.contains("diameter.wireshark_dictionary") && e.contains("TGPP.xml:3:"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check-config"])
        .arg(repo_root().join("tollgate.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
