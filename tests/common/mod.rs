//! End-to-end harness: spawns the real `tollgate` binary on port 0 with a fresh store
//! (a SQLite file, or a fresh database on the PostgreSQL server named by
//! `TOLLGATE_TEST_PG_URL`), reads its "listening on" line, and talks Diameter to it over TCP
//! with Tollgate's own peer layer as the client.
#![allow(dead_code, clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

/// One `#[tokio::test]` per store for each named `async fn NAME(backend: Backend)` of the
/// calling test file: `sqlite::NAME` and `postgres::NAME` (the latter skipped, or failed under
/// TOLLGATE_TEST_REQUIRE_ALL, without a PostgreSQL). The file declares `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! tests_on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

use sqlx::{Connection, Executor};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Dictionary, Message};
use tollgate_peer::{LocalPeer, Node, PeerLimits};

pub const PG_ENV: &str = "TOLLGATE_TEST_PG_URL";

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        t % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store for one test.
pub struct Store {
    pub url: String,
    pub dir: PathBuf,
    pub pg: Option<(String, String)>,
}

impl Store {
    /// `None` (with a printed reason) when the backend is not available here.
    pub async fn new(backend: Backend) -> Option<Store> {
        let dir = std::env::temp_dir().join(unique("tollgate-e2e"));
        std::fs::create_dir_all(&dir).unwrap();
        match backend {
            Backend::Sqlite => Some(Store {
                url: format!("sqlite://{}", dir.join("ledger.sqlite3").display()),
                dir,
                pg: None,
            }),
            Backend::Postgres => {
                let server = tollgate_testkit::component(
                    std::env::var(PG_ENV).ok(),
                    &format!("PostgreSQL ({PG_ENV})"),
                    "scripts/test starts one with scripts/start-postgres and sets it",
                )?;
                sqlx::any::install_default_drivers();
                let name = unique("tge");
                let mut c = sqlx::AnyConnection::connect(&server).await.unwrap();
                c.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                c.close().await.ok();
                let base = server.rsplit_once('/').unwrap().0.to_string();
                Some(Store {
                    url: format!("{base}/{name}"),
                    dir,
                    pg: Some((server, name)),
                })
            }
        }
    }

    pub async fn drop_store(self) {
        if let Some((server, name)) = &self.pg {
            if let Ok(mut c) = sqlx::AnyConnection::connect(server).await {
                let _ = c
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                c.close().await.ok();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs `tollgate ARGS --database-url URL` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .arg("--database-url")
            .arg(&self.url)
            .env_remove("TOLLGATE_DATABASE_URL")
            .output()
            .unwrap()
    }

    /// `tollgate ledger verify` must pass.
    pub fn verify(&self) {
        let out = self.cli(&["ledger", "verify"]);
        assert!(
            out.status.success(),
            "ledger verify failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `tollgate account show --id ID --json`.
    pub fn account(&self, id: &str) -> serde_json::Value {
        let out = self.cli(&["account", "show", "--id", id, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn run_ok(&self, args: &[&str]) {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running `tollgate serve`.
pub struct Server {
    pub child: Child,
    pub diameter: SocketAddr,
    pub admin: SocketAddr,
}

impl Server {
    /// Starts `tollgate serve` on the store with extra flags, and waits for "listening on".
    pub fn start(store: &Store, extra: &[&str]) -> Server {
        Self::start_with(store, extra, &[])
    }

    pub fn start_with(store: &Store, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        // ocs.test unless the test names the node itself.
        if !extra.contains(&"--origin-host") {
            cmd.args(["--origin-host", "ocs.test"]);
        }
        cmd.args(["--origin-realm", "test"])
            .arg("--data-dir")
            .arg(&store.dir)
            .arg("--database-url")
            .arg(&store.url)
            .args(extra)
            .env_remove("TOLLGATE_DATABASE_URL")
            .env("TOLLGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("tollgate serve exited before printing its listening line")
            .unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let (diameter, admin) = parse_listening(&line);
        Server {
            child,
            diameter,
            admin,
        }
    }

    /// SIGTERM, then the exit status must be 0.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert_eq!(status, Some(0), "tollgate serve did not exit 0 on SIGTERM");
    }

    /// GET a path on the admin listener; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn parse_listening(line: &str) -> (SocketAddr, SocketAddr) {
    let rest = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut diameter = None;
    let mut admin = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("diameter=") {
            diameter = Some(v.parse().unwrap());
        } else if let Some(v) = part.strip_prefix("admin=") {
            admin = Some(v.parse().unwrap());
        }
    }
    (diameter.unwrap(), admin.unwrap())
}

/// A Diameter client peer (Tollgate's own node with no application) connected to `addr`.
pub struct Client {
    pub node: Arc<Node>,
    pub server_host: String,
    pub host: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr, host: &str) -> Client {
        let node = Node::new(
            LocalPeer::new(host, "test"),
            PeerLimits::default(),
            Arc::new(Dictionary::builtin().clone()),
            None,
            &[ApplicationId::CREDIT_CONTROL],
        );
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_host = node.connect_once(stream).await.unwrap();
        Client {
            node,
            server_host,
            host: host.to_string(),
        }
    }

    pub async fn ask(&self, m: Message) -> Message {
        self.node
            .request(Some(&self.server_host), m, Duration::from_secs(10))
            .await
            .unwrap()
    }

    pub async fn close(self) {
        self.node.shutdown(Duration::from_secs(5)).await;
    }

    /// A CCR skeleton for this client: Session-Id, identities, Service-Context-Id, type, number.
    pub fn ccr(&self, session: &str, kind: i32, number: u32) -> Message {
        ccr(&self.host, session, kind, number)
    }
}

/// A CCR skeleton from `host` (realm test): Session-Id, identities, Service-Context-Id, type,
/// number.
pub fn ccr(host: &str, session: &str, kind: i32, number: u32) -> Message {
    Message::request(
        CommandCode::CREDIT_CONTROL,
        ApplicationId::CREDIT_CONTROL,
        true,
    )
    .with(Avp::from_str(SESSION_ID, session))
    .with(Avp::from_str(ORIGIN_HOST, host))
    .with(Avp::from_str(ORIGIN_REALM, "test"))
    .with(Avp::from_str(DESTINATION_REALM, "test"))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
    .with(Avp::from_enum(CC_REQUEST_TYPE, kind))
    .with(Avp::from_u32(CC_REQUEST_NUMBER, number))
}

pub fn subscription(kind: i32, data: &str) -> Avp {
    Avp::grouped(
        SUBSCRIPTION_ID,
        &[
            Avp::from_enum(SUBSCRIPTION_ID_TYPE, kind),
            Avp::from_str(SUBSCRIPTION_ID_DATA, data),
        ],
    )
}

/// An MSCC with optional Rating-Group, RSU and USU (unit AVP builders).
pub fn mscc(
    rg: Option<u32>,
    rsu: Option<Avp>,
    usu: Option<Avp>,
    reporting_reason: Option<i32>,
) -> Avp {
    let mut m = Vec::new();
    if let Some(r) = rsu {
        m.push(Avp::grouped(REQUESTED_SERVICE_UNIT, &[r]));
    }
    if let Some(u) = usu {
        m.push(Avp::grouped(USED_SERVICE_UNIT, &[u]));
    }
    if let Some(rg) = rg {
        m.push(Avp::from_u32(RATING_GROUP, rg));
    }
    if let Some(r) = reporting_reason {
        m.push(Avp::from_enum(REPORTING_REASON, r));
    }
    Avp::grouped(MULTIPLE_SERVICES_CREDIT_CONTROL, &m)
}

/// The members of the first MSCC of an answer with the given Rating-Group.
pub fn answer_mscc(a: &Message, rg: u32) -> Vec<Avp> {
    for m in a.find_all(MULTIPLE_SERVICES_CREDIT_CONTROL) {
        let members = m.members().unwrap();
        if members
            .iter()
            .any(|x| x.is(RATING_GROUP) && x.u32().unwrap() == rg)
        {
            return members;
        }
    }
    panic!("no MSCC for rating group {rg} in {a:?}")
}

/// Granted CC-Time / CC-Service-Specific-Units inside an MSCC's GSU.
pub fn granted(members: &[Avp]) -> Option<u64> {
    let gsu = members.iter().find(|x| x.is(GRANTED_SERVICE_UNIT))?;
    let unit = gsu.members().unwrap().into_iter().next()?;
    if unit.is(CC_TIME) {
        Some(u64::from(unit.u32().unwrap()))
    } else {
        Some(unit.u64().unwrap())
    }
}

pub fn result_in(members: &[Avp]) -> Option<u32> {
    members
        .iter()
        .find(|x| x.is(RESULT_CODE))
        .map(|x| x.u32().unwrap())
}

/// Provisions the standard test subscriber: account `alice`, EUR `balance`, e164:15550000001
/// and sip:alice@example.com; tariffs on 32260@3gpp.org: 0.01/s (quantum 60) and 0.05/unit
/// (quantum 10), and rating group 20 at 0.02/s.
pub fn provision(store: &Store, balance: &str) {
    store.create_account(
        "alice",
        balance,
        &["e164:15550000001", "sip:alice@example.com"],
    );
    store.set_tariff(
        &Tariff::new("32260@3gpp.org", "seconds", "0.01")
            .quantum(60)
            .min_grant(1),
    );
    store.set_tariff(
        &Tariff::new("32260@3gpp.org", "units", "0.05")
            .quantum(10)
            .min_grant(1),
    );
    store.set_tariff(
        &Tariff::new("32260@3gpp.org", "seconds", "0.02")
            .rating_group(20)
            .quantum(60)
            .min_grant(1),
    );
}

/// One `tollgate tariff set`: a price per unit on a Service-Context-Id, for one Rating-Group
/// or (without) the whole context; quantum and minimum grant as the CLI defaults them unless
/// given.
pub struct Tariff<'a> {
    pub context: &'a str,
    pub rating_group: Option<u32>,
    /// `seconds`, `octets` or `units`.
    pub unit: &'a str,
    /// Per unit, in the account's currency, as text (`0.01`).
    pub price: &'a str,
    pub quantum: Option<u64>,
    pub min_grant: Option<u64>,
}

impl<'a> Tariff<'a> {
    pub fn new(context: &'a str, unit: &'a str, price: &'a str) -> Self {
        Tariff {
            context,
            rating_group: None,
            unit,
            price,
            quantum: None,
            min_grant: None,
        }
    }

    pub fn rating_group(self, rating_group: u32) -> Self {
        Tariff {
            rating_group: Some(rating_group),
            ..self
        }
    }

    pub fn quantum(self, quantum: u64) -> Self {
        Tariff {
            quantum: Some(quantum),
            ..self
        }
    }

    pub fn min_grant(self, min_grant: u64) -> Self {
        Tariff {
            min_grant: Some(min_grant),
            ..self
        }
    }

    /// The `tollgate tariff set …` arguments for this tariff, then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["tariff", "set", "--service-context", self.context]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        if let Some(rg) = self.rating_group {
            args.extend(["--rating-group".into(), rg.to_string()]);
        }
        args.extend(["--unit", self.unit, "--price", self.price].map(String::from));
        if let Some(q) = self.quantum {
            args.extend(["--quantum".into(), q.to_string()]);
        }
        if let Some(m) = self.min_grant {
            args.extend(["--min-grant".into(), m.to_string()]);
        }
        args.extend(extra.iter().map(|e| e.to_string()));
        args
    }
}

impl Store {
    /// `tollgate account create` in EUR with `balance` and each of `subscriptions`
    /// (`TYPE:DATA`); it must succeed.
    pub fn create_account(&self, id: &str, balance: &str, subscriptions: &[&str]) {
        self.run_ok(&account_create_args(id, balance, subscriptions));
    }

    /// The same command's output, for what it must refuse.
    pub fn try_create_account(&self, id: &str, balance: &str, subscriptions: &[&str]) -> Output {
        self.cli(&account_create_args(id, balance, subscriptions))
    }

    /// `tollgate tariff set` for `tariff`; it must succeed.
    pub fn set_tariff(&self, tariff: &Tariff) {
        self.set_tariff_with(tariff, &[]);
    }

    /// The same, with more flags (`--quota-threshold 10`, `--final-unit-action redirect` …).
    pub fn set_tariff_with(&self, tariff: &Tariff, extra: &[&str]) {
        let args = tariff.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_ok(&args);
    }
}

fn account_create_args<'a>(
    id: &'a str,
    balance: &'a str,
    subscriptions: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "account",
        "create",
        "--id",
        id,
        "--currency",
        "EUR",
        "--balance",
        balance,
    ];
    for s in subscriptions {
        args.extend(["--subscription", s]);
    }
    args
}

/// The end of a flow on one store: the client disconnects (DPR), `tollgate ledger verify`
/// passes, the server exits 0 on SIGTERM, the store goes.
pub async fn finish(client: Client, server: Server, store: Store) {
    client.close().await;
    store.verify();
    server.stop();
    store.drop_store().await;
}

/// The Final-Unit-Action (RFC 4006 §8.35) in the Final-Unit-Indication of an answer MSCC's
/// `members`; `None` without a Final-Unit-Indication.
pub fn final_unit_action(members: &[Avp]) -> Option<i32> {
    let fui = members.iter().find(|x| x.is(FINAL_UNIT_INDICATION))?;
    Some(
        fui.member(FINAL_UNIT_ACTION)
            .unwrap()
            .unwrap()
            .enumerated()
            .unwrap(),
    )
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// --- Third-party clients and decoders shared by the interop suites ----------------------------

impl Store {
    /// One integer from the store through the auditors' SQL views (same SQL on both backends).
    pub async fn scalar(&self, sql: &str) -> i64 {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        let v: i64 = sqlx::query(sql).fetch_one(&mut c).await.unwrap().get(0);
        c.close().await.ok();
        v
    }
}

/// A string as an SQL literal.
pub fn sql_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Whether python-diameter (PyPI, import name `diameter`) is there, by the testkit rule.
pub fn python_diameter_present() -> bool {
    tollgate_testkit::present(
        python_has("diameter"),
        "python-diameter (Python module diameter)",
        "python3 -m pip install python-diameter",
    )
}

/// Whether `python3 -c "import MODULE"` succeeds.
pub fn python_has(module: &str) -> bool {
    tollgate_testkit::runs("python3", &["-c", &format!("import {module}")])
}

/// How a helper process ended and what it printed.
pub struct ProcessOutput {
    /// `None`: killed after its time limit (or ended by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `python3 <repo>/SCRIPT ARGS…` with both pipes drained, killed after `limit`.
pub fn run_python(script: &str, args: &[&std::ffi::OsStr], limit: Duration) -> ProcessOutput {
    use std::io::Read;
    let mut child = spawn_python(script, args);
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let code = wait_timeout(&mut child, limit);
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    ProcessOutput {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A script of tests/python started with `args`, its stdout and stderr piped.
pub fn spawn_python(script: &str, args: &[&std::ffi::OsStr]) -> Child {
    Command::new("python3")
        .arg(repo_root().join(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The messages of a file with one hex-encoded Diameter message per line.
pub fn hex_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| hex::decode(l.trim()).unwrap())
        .collect()
}

/// What a server sent (`payloads`, written to `pcap_path`) dissects cleanly in tshark
/// (tollgate_testkit::tshark::dissects_cleanly); the dissection, or `None` when tshark is
/// missing and the run allows that.
pub fn tshark_server_messages(payloads: &[Vec<u8>], pcap_path: &Path) -> Option<String> {
    tollgate_testkit::tshark::dissects_cleanly(
        payloads,
        tollgate_testkit::tshark::Sender::Server,
        pcap_path,
    )
}
