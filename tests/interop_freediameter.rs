//! Interoperability with a Diameter stack nobody here wrote: Debian's freeDiameter daemon
//! (`freeDiameterd`, package freediameterd) configured as a client peer of `tollgate serve`.
//! It must complete CER/CEA, exchange DWR/DWA (both sides run a 6 s watchdog), and leave
//! cleanly with DPR/DPA on SIGTERM; Tollgate keeps serving afterwards and exits 0.
//! Everything is asserted from freeDiameter's own debug log (`-dd`: it logs every message
//! sent and received, and every peer state change) and Tollgate's /metrics.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Client, Server, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian binary is `freeDiameterd`; the package is freediameterd.
const DAEMONS: [&str; 2] = ["freeDiameterd", "freediameterd"];
/// Where Debian (freediameter-extensions), multiarch builds and source installs put the
/// extensions.
const EXTENSION_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/freeDiameter",
    "/usr/lib/freeDiameter",
    "/usr/local/lib/freeDiameter",
];
/// Dictionaries for credit control, each depending on the ones before it (dict_dcca needs
/// dict_nasreq; dict_dcca_3gpp needs dict_dcca).
const DICTIONARIES: [&str; 3] = ["dict_nasreq.fdx", "dict_dcca.fdx", "dict_dcca_3gpp.fdx"];

use tollgate_testkit::runs;

/// A port nobody listens on right now (bound on port 0, then released), for freeDiameter's
/// own server sockets, which its configuration needs as numbers.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The credit-control dictionary extensions present here, in load order.
fn dictionaries() -> Vec<PathBuf> {
    let Some(dir) = EXTENSION_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join(DICTIONARIES[0]).exists())
    else {
        return Vec::new();
    };
    DICTIONARIES
        .iter()
        .map(|f| dir.join(f))
        .take_while(|p| p.exists())
        .collect()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls freeDiameter's log until `done` holds; panics with the log on timeout or when the
/// daemon exits first.
async fn wait_for_log(
    fd: &mut Child,
    log: &Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) {
    let start = Instant::now();
    loop {
        let text = read_log(log);
        if done(&text) {
            return;
        }
        if let Ok(Some(status)) = fd.try_wait() {
            panic!("freeDiameterd exited ({status}) before {what}; its log:\n{text}");
        }
        if start.elapsed() > limit {
            panic!("no {what} within {limit:?}; freeDiameterd's log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls Tollgate's /metrics until it contains `line`.
async fn wait_for_metric(server: &Server, line: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let (status, body) = server.http_get("/metrics");
        if status == 200 && body.lines().any(|l| l.trim() == line) {
            return;
        }
        if start.elapsed() > limit {
            panic!("/metrics never showed {line:?} within {limit:?}; last:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Index of the first line at or after `from` containing every needle.
fn find_line(lines: &[&str], from: usize, needles: &[&str]) -> Option<usize> {
    (from..lines.len()).find(|&i| needles.iter().all(|n| lines[i].contains(n)))
}

/// A DWR/DWA exchange in either direction: freeDiameter sent a DWR and then received an
/// answer to command 280 from ocs.test, or received Tollgate's DWR and answered it.
fn watchdog_exchanged(log: &str) -> bool {
    let lines: Vec<&str> = log.lines().collect();
    let ours = find_line(
        &lines,
        0,
        &["SENT to 'ocs.test'", "'Device-Watchdog-Request'"],
    )
    .and_then(|i| find_line(&lines, i + 1, &["RCV from 'ocs.test'", "0/280 f:-"]));
    let theirs = find_line(&lines, 0, &["RCV from 'ocs.test'", "0/280 f:R"]).and_then(|i| {
        find_line(
            &lines,
            i + 1,
            &["SENT to 'ocs.test'", "'Device-Watchdog-Answer'"],
        )
    });
    ours.is_some() || theirs.is_some()
}

/// The daemon, killed if the test panics before it stopped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freediameter_client_peers_watchdogs_and_disconnects() {
    let Some(daemon) = tollgate_testkit::component(
        DAEMONS.iter().copied().find(|d| runs(d, &["--version"])),
        "freeDiameterd",
        "apt-get install freediameterd freediameter-extensions",
    ) else {
        return;
    };
    if !tollgate_testkit::present(
        runs("openssl", &["version"]),
        "openssl",
        "apt-get install openssl",
    ) {
        return;
    }
    let store = Store::new(Backend::Sqlite).await.unwrap();

    // Tollgate with a 6 s watchdog (RFC 3539's minimum), so a DWR comes within ~8 s.
    let tollgate_conf = store.dir.join("tollgate.toml");
    std::fs::write(&tollgate_conf, "[diameter]\ntw_ms = 6000\n").unwrap();
    let server = Server::start(&store, &["--config", tollgate_conf.to_str().unwrap()]);

    // freeDiameter refuses to start without TLS credentials, even for a No_TLS peer.
    let fd_dir = store.dir.join("freediameter");
    std::fs::create_dir_all(&fd_dir).unwrap();
    openssl(
        &fd_dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=client.test",
        ],
    );
    std::fs::copy(fd_dir.join("cert.pem"), fd_dir.join("ca.pem")).unwrap();

    let dicts = dictionaries();
    if dicts.is_empty() {
        // Not fatal: freeDiameter advertises the Relay application either way (dictionary
        // extensions register no application), which Tollgate accepts.
        println!("note: no freeDiameter dictionary extensions (package freediameter-extensions); running without");
    }
    let load: String = dicts
        .iter()
        .map(|p| format!("LoadExtension = \"{}\";\n", p.display()))
        .collect();
    let conf = format!(
        r#"Identity = "client.test";
Realm = "test";
Port = {port};
SecPort = {sec_port};
ListenOn = "127.0.0.1";
No_SCTP;
No_IPv6;
TcTimer = 6;
TwTimer = 6;
TLS_Cred = "{dir}/cert.pem", "{dir}/key.pem";
TLS_CA = "{dir}/ca.pem";
{load}ConnectPeer = "ocs.test" {{ ConnectTo = "127.0.0.1"; Port = {tollgate}; No_TLS; }};
"#,
        port = free_port(),
        sec_port = free_port(),
        dir = fd_dir.display(),
        tollgate = server.diameter.port(),
    );
    let conf_path = fd_dir.join("freeDiameter.conf");
    std::fs::write(&conf_path, conf).unwrap();

    let log = fd_dir.join("freeDiameterd.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut daemon = Daemon(
        Command::new(daemon)
            .arg("-c")
            .arg(&conf_path)
            .arg("-dd")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let fd = &mut daemon.0;

    // CER/CEA: freeDiameter's peer state machine reaches OPEN with ocs.test, and it logs the
    // CEA's capabilities with a successful Result-Code.
    wait_for_log(
        fd,
        &log,
        "the capabilities exchange",
        Duration::from_secs(20),
        |l| l.contains("'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'ocs.test'"),
    )
    .await;
    let text = read_log(&log);
    let caps = text
        .lines()
        .skip_while(|l| !l.contains("Connected to 'ocs.test'"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        caps.contains("Capabilities-Exchange-Answer(257)"),
        "CEA not logged:\n{text}"
    );
    assert!(
        caps.contains("'DIAMETER_SUCCESS' (2001"),
        "CEA not a success:\n{text}"
    );
    assert!(
        caps.contains("Origin-Host(264)[-M]=\"ocs.test\""),
        "CEA Origin-Host:\n{text}"
    );
    assert!(
        caps.contains("Auth-Application-Id(258)[-M]=4 "),
        "CEA lacks credit control:\n{text}"
    );
    wait_for_metric(
        &server,
        "tollgate_peers{state=\"ROpen\"} 1",
        Duration::from_secs(10),
    )
    .await;

    // DWR/DWA: Tollgate's watchdog fires within Tw ± 2 s, freeDiameter's after its TwTimer.
    wait_for_log(
        fd,
        &log,
        "a DWR/DWA exchange",
        Duration::from_secs(25),
        watchdog_exchanged,
    )
    .await;

    // Clean disconnect: SIGTERM makes freeDiameter send DPR, wait for the DPA, close.
    let pid = fd.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = common::wait_timeout(fd, Duration::from_secs(25));
    let text = read_log(&log);
    assert_eq!(
        status,
        Some(0),
        "freeDiameterd did not exit 0 after SIGTERM; its log:\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let dpr = find_line(
        &lines,
        0,
        &["SENT to 'ocs.test'", "'Disconnect-Peer-Request'"],
    )
    .unwrap_or_else(|| panic!("freeDiameter sent no DPR:\n{text}"));
    let dpa = find_line(&lines, dpr + 1, &["RCV from 'ocs.test'", "0/282 f:-"])
        .unwrap_or_else(|| panic!("no DPA from Tollgate after the DPR:\n{text}"));
    let closing = find_line(
        &lines,
        dpa + 1,
        &["'STATE_CLOSING_GRACE'\t-> 'STATE_CLOSING'\t'ocs.test'"],
    )
    .unwrap_or_else(|| panic!("freeDiameter did not close on the DPA:\n{text}"));
    find_line(
        &lines,
        closing + 1,
        &["'STATE_CLOSING'\t-> 'STATE_CLOSED'\t'ocs.test'"],
    )
    .unwrap_or_else(|| panic!("the peer did not reach STATE_CLOSED:\n{text}"));
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            l.contains(" ERROR ") || (l.contains("FATAL") && !l.contains("shutdown sequence"))
        })
        .collect();
    assert!(
        errors.is_empty(),
        "freeDiameter logged errors: {errors:#?}\nfull log:\n{text}"
    );

    // Tollgate saw the peer leave, and still serves: a second client completes CER/CEA.
    wait_for_metric(
        &server,
        "tollgate_peers{state=\"ROpen\"} 0",
        Duration::from_secs(10),
    )
    .await;
    let client = Client::connect(server.diameter, "second.test").await;
    assert_eq!(client.server_host, "ocs.test");
    client.close().await;

    server.stop();
    drop(daemon);
    store.drop_store().await;
}
