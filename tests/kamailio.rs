//! Kamailio 5.6's IMS charging (modules cdp, cdp_avp, ims_dialog, ims_charging) as a real Ro
//! client of `tollgate serve`, with real SIP calls on loopback.
//!
//! The rig: `tollgate serve` on port 0 with a 3 s Validity-Time; a recording relay in front of
//! it (every Diameter frame passes through unchanged and is kept, so the test reads the CCRs
//! Kamailio really sent and the CCAs Tollgate really answered); Kamailio in the foreground in
//! its own directory, configured from `tests/kamailio/` with ports picked at run time; two
//! small SIP user agents written here (Debian has no sipp): the caller sends INVITE to
//! Kamailio, the callee answers 180 and 200, ACK and BYE follow the Record-Route set through
//! Kamailio (RFC 3261 §12, §16.12).
//!
//! What it proves (issue 16), on the embedded store (SQLite) and on PostgreSQL (when
//! `TOLLGATE_TEST_PG_URL` names a server, as under `scripts/test`), `tollgate ledger verify`
//! passing after each:
//! - a call is charged with CCR-I, at least one CCR-U and CCR-T, and the ledger is debited by
//!   exactly the seconds Kamailio reported times the tariff;
//! - a subscriber without credit gets SIP 402 (CCA 4012) and nothing moves in the ledger;
//! - a subscriber with little credit gets a Final-Unit-Indication TERMINATE; Kamailio itself
//!   sends BYE to both parties when the grant runs out, then CCR-T; the charge is the credit.
//!
//! Set `TOLLGATE_KAMAILIO_WIRE_DIR=DIR` to keep every Diameter frame of each test as a file in
//! `DIR/TEST/` (`NNN-kamailio-CCR.bin`, `NNN-tollgate-CCA.bin`, …) for `tollgate decode`.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{final_unit_action, wait_timeout, Backend, Server, Store, Tariff};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tollgate_codec::codes::*;
use tollgate_codec::{check_frame, describe, Avp, AvpType, CommandCode, Dictionary, Message};

/// Where Debian (and a source install) put Kamailio's modules.
const MODULE_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
];
/// The modules the configuration loads; the last four come with kamailio-ims-modules.
const MODULES: [&str; 13] = [
    "tm.so",
    "sl.so",
    "rr.so",
    "pv.so",
    "xlog.so",
    "maxfwd.so",
    "textops.so",
    "siputils.so",
    "ctl.so",
    "cdp.so",
    "cdp_avp.so",
    "ims_dialog.so",
    "ims_charging.so",
];
const HINT: &str = "apt-get install kamailio kamailio-ims-modules";

/// Tollgate's Validity-Time (RFC 4006 §8.33). Kamailio asks for more credit 1 s before it
/// runs out (timer_buffer in kamailio.cfg), so a call sees a CCR-U about every 2 s.
const VALIDITY_S: u32 = 3;
/// The voice tariff: 0.07 EUR a second, so the charges below are not round numbers.
const PRICE_MINOR_PER_S: i64 = 7;
/// Every wait on Kamailio or a UA gives up after this long.
const PATIENCE: Duration = Duration::from_secs(20);

/// The module directory when Kamailio, kamcmd and every module are there.
fn kamailio_modules() -> Option<PathBuf> {
    if !tollgate_testkit::present(
        tollgate_testkit::runs("kamailio", &["-v"]) && tollgate_testkit::runs("kamcmd", &["-V"]),
        "Kamailio (kamailio, kamcmd)",
        HINT,
    ) {
        return None;
    }
    let dir = MODULE_DIRS
        .iter()
        .map(Path::new)
        .find(|d| MODULES.iter().all(|m| d.join(m).exists()));
    if !tollgate_testkit::present(
        dir.is_some(),
        "Kamailio's IMS modules (cdp, cdp_avp, ims_dialog, ims_charging)",
        HINT,
    ) {
        return None;
    }
    dir.map(Path::to_path_buf)
}

/// A port nobody listens on right now, for Kamailio's SIP socket and cdp's Acceptor, whose
/// configuration needs numbers (bound on port 0, then released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The recording relay between Kamailio and Tollgate

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Kamailio,
    Tollgate,
}

type Frames = Arc<Mutex<Vec<(Side, Bytes)>>>;

/// Accepts cdp's connections and relays each to Tollgate byte for byte, keeping a copy of
/// every whole Diameter frame (RFC 6733 §3: the header's length says where a frame ends).
struct Tap {
    addr: SocketAddr,
    frames: Frames,
}

/// One credit-control request and its answer, if one came.
struct Exchange {
    ccr: Message,
    cca: Option<Message>,
}

impl Tap {
    async fn start(ocs: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frames: Frames = Arc::default();
        let kept = Arc::clone(&frames);
        tokio::spawn(async move {
            while let Ok((kamailio, _)) = listener.accept().await {
                let Ok(tollgate) = TcpStream::connect(ocs).await else {
                    continue;
                };
                let (kr, kw) = kamailio.into_split();
                let (tr, tw) = tollgate.into_split();
                tokio::spawn(pump(kr, tw, Side::Kamailio, Arc::clone(&kept)));
                tokio::spawn(pump(tr, kw, Side::Tollgate, Arc::clone(&kept)));
            }
        });
        Tap { addr, frames }
    }

    fn messages(&self) -> Vec<(Side, Message)> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .map(|(side, f)| (*side, Message::decode(f).unwrap()))
            .collect()
    }

    /// Kamailio's CCRs in order, each with Tollgate's answer (matched by hop-by-hop and
    /// end-to-end identifier, RFC 6733 §3).
    fn credit_control(&self) -> Vec<Exchange> {
        let messages = self.messages();
        let answers: Vec<&Message> = messages
            .iter()
            .filter(|(s, m)| *s == Side::Tollgate && !m.is_request())
            .map(|(_, m)| m)
            .collect();
        messages
            .iter()
            .filter(|(s, m)| {
                *s == Side::Kamailio
                    && m.is_request()
                    && m.header.command == CommandCode::CREDIT_CONTROL
            })
            .map(|(_, ccr)| Exchange {
                ccr: ccr.clone(),
                cca: answers
                    .iter()
                    .find(|a| {
                        a.header.hop_by_hop == ccr.header.hop_by_hop
                            && a.header.end_to_end == ccr.header.end_to_end
                    })
                    .map(|a| (*a).clone()),
            })
            .collect()
    }

    /// Polls until `done` holds for the exchanges so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Exchange]) -> bool) -> Vec<Exchange> {
        let start = Instant::now();
        loop {
            let ex = self.credit_control();
            if done(&ex) {
                return ex;
            }
            assert!(start.elapsed() < PATIENCE, "no {what} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every frame, decoded the way `tollgate decode` shows it.
    fn render(&self) -> String {
        let dict = Dictionary::builtin();
        let mut out = String::new();
        for (side, m) in self.messages() {
            out.push_str(&format!(
                "--- from {side:?}\n{}\n",
                describe::render(dict, &m)
            ));
        }
        out
    }

    /// Every CCA Tollgate sent, as bytes on the wire, dissects in tshark as a Credit-Control
    /// answer with no malformed frame and no expert warning (common::tshark_server_messages).
    fn tshark_check(&self, pcap: &Path) {
        let ccas: Vec<Vec<u8>> = self
            .frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(side, f)| {
                *side == Side::Tollgate
                    && Message::decode(f).is_ok_and(|m| {
                        !m.is_request() && m.header.command == CommandCode::CREDIT_CONTROL
                    })
            })
            .map(|(_, f)| f.to_vec())
            .collect();
        assert!(!ccas.is_empty(), "Tollgate sent Kamailio no CCA");
        let Some(text) = common::tshark_server_messages(&ccas, pcap) else {
            return;
        };
        assert_eq!(
            text.matches("Credit-Control (272)").count(),
            ccas.len(),
            "{text}"
        );
    }

    /// Keeps every frame as a file under `$TOLLGATE_KAMAILIO_WIRE_DIR/TEST/`, if that is set.
    fn save(&self, test: &str) {
        let Some(root) = std::env::var_os("TOLLGATE_KAMAILIO_WIRE_DIR") else {
            return;
        };
        let dir = Path::new(&root).join(test);
        std::fs::create_dir_all(&dir).unwrap();
        let dict = Dictionary::builtin();
        for (n, (side, frame)) in self.frames.lock().unwrap().iter().enumerate() {
            let m = Message::decode(frame).unwrap();
            let command = dict
                .command(m.header.application, m.header.command)
                .map(|c| c.short.clone())
                .unwrap_or_else(|| m.header.command.0.to_string());
            let kind = if m.is_request() { "R" } else { "A" };
            let side = if *side == Side::Kamailio {
                "kamailio"
            } else {
                "tollgate"
            };
            std::fs::write(
                dir.join(format!("{n:03}-{side}-{command}{kind}.bin")),
                frame,
            )
            .unwrap();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== Diameter between Kamailio and Tollgate ===\n{}",
                self.render()
            );
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    side: Side,
    frames: Frames,
) {
    let mut pending = BytesMut::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Ok(Some(len)) = check_frame(&pending, 1 << 24) {
            frames
                .lock()
                .unwrap()
                .push((side, pending.split_to(len).freeze()));
        }
    }
    let _ = to.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Reading credit-control messages

fn request_type(m: &Message) -> i32 {
    m.find(CC_REQUEST_TYPE).unwrap().enumerated().unwrap()
}

const INITIAL: i32 = 1;
const UPDATE: i32 = 2;
const TERMINATION: i32 = 3;

fn result_code(m: &Message) -> u32 {
    m.result_code().map(|c| c.0).unwrap_or(0)
}

/// The members of the (only) MSCC; Kamailio sends one per CCR.
fn mscc(m: &Message) -> Vec<Avp> {
    m.find(MULTIPLE_SERVICES_CREDIT_CONTROL)
        .map(|a| a.members().unwrap())
        .unwrap_or_default()
}

/// CC-Time inside the MSCC's `unit` AVP (Granted-, Requested- or Used-Service-Unit).
fn cc_time(members: &[Avp], unit: tollgate_codec::AvpCode) -> Option<u32> {
    let u = members.iter().find(|a| a.is(unit))?;
    u.member(CC_TIME).unwrap().map(|t| t.u32().unwrap())
}

/// The innermost AVP named in each Failed-AVP, by dictionary name.
fn failed_avps(m: &Message) -> Vec<String> {
    let dict = Dictionary::builtin();
    let mut names = Vec::new();
    for failed in m.find_all(FAILED_AVP) {
        for mut avp in failed.members().unwrap_or_default() {
            loop {
                let grouped = dict
                    .avp_of(&avp)
                    .is_some_and(|d| d.avp_type == AvpType::Grouped);
                match avp.members().ok().and_then(|m| m.into_iter().next()) {
                    Some(inner) if grouped => avp = inner,
                    _ => break,
                }
            }
            names.push(
                dict.avp_of(&avp)
                    .map(|d| d.name.clone())
                    .unwrap_or_else(|| format!("AVP {} vendor {}", avp.code, avp.vendor())),
            );
        }
    }
    names
}

/// A refused answer in words: Result-Code, Failed-AVP, Error-Message.
fn refusal(cca: &Message) -> String {
    let message = cca
        .find(ERROR_MESSAGE)
        .and_then(|a| a.utf8().ok().map(str::to_string))
        .unwrap_or_default();
    format!(
        "Result-Code {}, Failed-AVP {:?}, Error-Message {message:?}",
        result_code(cca),
        failed_avps(cca)
    )
}

/// The CCA-I must be a grant; when it is not, say exactly why (issue 16 lists the changes
/// Kamailio's CCR-I needs: application id in Vendor-Specific-Application-Id, E.164 with `+`,
/// Service-Context-Id matched by suffix).
fn assert_granted(ex: &Exchange) {
    let cca = ex.cca.as_ref().expect("Tollgate did not answer the CCR-I");
    assert_eq!(
        result_code(cca),
        2001,
        "Tollgate refused Kamailio's CCR-I: {}",
        refusal(cca)
    );
}

// ---------------------------------------------------------------------------------------------
// Kamailio

/// A running Kamailio; stopped (and on failure, its log printed) when dropped.
struct Kamailio {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    sip: SocketAddr,
}

impl Kamailio {
    /// Writes the configuration into `dir` and starts Kamailio in the foreground there,
    /// with cdp's Peer at `ocs`.
    fn start(modules: &Path, dir: &Path, ocs: SocketAddr) -> Kamailio {
        std::fs::create_dir_all(dir).unwrap();
        let sip_port = free_udp_port();
        let cfg = include_str!("kamailio/kamailio.cfg")
            .replace("{{SIP_PORT}}", &sip_port.to_string())
            .replace("{{MODULES}}", &format!("{}/", modules.display()))
            .replace("{{DIR}}", &dir.display().to_string());
        let cdp = include_str!("kamailio/cdp.xml")
            .replace("{{OCS_PORT}}", &ocs.port().to_string())
            .replace("{{ACCEPTOR_PORT}}", &free_tcp_port().to_string());
        std::fs::write(dir.join("kamailio.cfg"), cfg).unwrap();
        std::fs::write(dir.join("cdp.xml"), cdp).unwrap();
        let log = dir.join("kamailio.log");
        let out = std::fs::File::create(&log).unwrap();
        // No core files: Kamailio 5.6 can crash on shutdown (an ims_dialog callback after its
        // table is gone) when transactions are still pending; `stop` waits them out.
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -c 0 && exec \"$@\"")
            .arg("sh")
            .arg("kamailio")
            .arg("-DD")
            .arg("-E")
            .arg("-w")
            .arg(dir)
            .arg("-f")
            .arg(dir.join("kamailio.cfg"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, so that a failed test can end Kamailio's children too.
            .process_group(0)
            .spawn()
            .unwrap();
        Kamailio {
            child,
            dir: dir.to_path_buf(),
            log,
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        }
    }

    fn kamcmd(&self, command: &str) -> Option<String> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio_ctl", self.dir.display()))
            .arg(command)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until cdp has the Tollgate peer open (RFC 6733 §5.6 I-Open: CER/CEA done).
    async fn wait_peer_open(&mut self) {
        let start = Instant::now();
        loop {
            assert!(self.alive(), "kamailio exited during startup");
            if self
                .kamcmd("cdp.list_peers")
                .is_some_and(|s| s.contains("State: I_Open"))
            {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "cdp's peer never reached I_Open within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Transactions still in tm's table (`kamcmd tm.stats`, "current").
    fn transactions(&self) -> Option<u64> {
        let stats = self.kamcmd("tm.stats")?;
        stats
            .lines()
            .find_map(|l| l.trim().strip_prefix("current:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until tm's table is empty, then SIGTERM; Kamailio must exit.
    async fn stop(mut self) {
        let start = Instant::now();
        while self.transactions() != Some(0) {
            assert!(
                start.elapsed() < PATIENCE,
                "Kamailio still has transactions after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "kamailio did not exit on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none()
                && matches!(self.child.try_wait(), Ok(None))
            {
                // Kamailio's main process ends its children on SIGTERM; when it cannot, end
                // the process group it was started in (its id is the main process's id).
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "=== kamailio log ({}) ===\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// A SIP user agent over UDP (RFC 3261), just enough for a call through a proxy

#[derive(Clone, Debug)]
struct Sip {
    start: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Sip {
    fn parse(data: &[u8]) -> Sip {
        let text = String::from_utf8_lossy(data);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            // A line starting with white space continues the previous header (§7.3.1).
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((long_name(name.trim()), value.trim().to_string()));
            }
        }
        Sip {
            start,
            headers,
            body: body.to_string(),
        }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn get(&self, name: &str) -> &str {
        self.all(name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {name} header in {}", self.start))
    }

    fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0") {
            None
        } else {
            self.start.split(' ').next()
        }
    }

    /// The method named in CSeq (what a response answers).
    fn cseq_method(&self) -> &str {
        self.get("CSeq")
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
    }
}

/// Compact header forms (RFC 3261 §7.3.3) in their long form.
fn long_name(name: &str) -> String {
    match name {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        other => other,
    }
    .to_string()
}

/// The URI inside `<…>` (or the whole value up to its first `;` when there are none).
fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// Where a SIP URI on loopback points: `sip:user@127.0.0.1:5060;lr` → 127.0.0.1:5060.
fn hop_of(uri: &str) -> SocketAddr {
    let rest = uri.strip_prefix("sip:").unwrap_or(uri);
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split([';', '?', '>']).next().unwrap_or(host_port);
    host_port
        .parse()
        .unwrap_or_else(|_| panic!("not an IP:port SIP URI: {uri}"))
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

struct Ua {
    name: &'static str,
    user: &'static str,
    sock: UdpSocket,
    addr: SocketAddr,
    branches: std::sync::atomic::AtomicU32,
    trace: Mutex<Vec<String>>,
}

impl Ua {
    async fn bind(name: &'static str, user: &'static str) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        Ua {
            name,
            user,
            sock,
            addr,
            branches: Default::default(),
            trace: Default::default(),
        }
    }

    fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.addr)
    }

    /// A Via for a new client transaction; the branch starts with the §8.1.1.7 magic cookie.
    fn via(&self) -> String {
        let n = self
            .branches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "SIP/2.0/UDP {};rport;branch=z9hG4bK-{}-{}-{n}",
            self.addr,
            self.name,
            std::process::id()
        )
    }

    async fn send(&self, msg: &str, to: SocketAddr) {
        self.trace.lock().unwrap().push(format!(
            "{} → {to}: {}",
            self.name,
            msg.lines().next().unwrap_or_default()
        ));
        self.sock.send_to(msg.as_bytes(), to).await.unwrap();
    }

    async fn recv(&self, what: &str) -> (Sip, SocketAddr) {
        let mut buf = vec![0u8; 65_535];
        let (n, from) = tokio::time::timeout(PATIENCE, self.sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{} waited {PATIENCE:?} for {what}", self.name))
            .unwrap();
        let msg = Sip::parse(&buf[..n]);
        self.trace
            .lock()
            .unwrap()
            .push(format!("{} ← {from}: {}", self.name, msg.start));
        (msg, from)
    }

    /// A response to `req` (§8.2.6): Via, From, Call-ID and CSeq copied, To with our tag;
    /// Record-Route copied too, so the dialog's route set is the same on both sides (§12.1.1).
    /// Sent back where the request came from, which is the top Via's sent-by here (§18.2.2).
    async fn respond(&self, req: &Sip, from: SocketAddr, status: &str, extra: &str, body: &str) {
        let mut msg = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "Record-Route", "From", "To", "Call-ID", "CSeq"] {
            for v in req.all(name) {
                if name == "To" && !v.contains("tag=") {
                    msg.push_str(&format!("To: {v};tag={}-tag\r\n", self.name));
                } else {
                    msg.push_str(&format!("{name}: {v}\r\n"));
                }
            }
        }
        msg.push_str(extra);
        msg.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&msg, from).await;
    }

    /// Waits for an in-dialog BYE of the call (not answered yet).
    async fn bye(&self, call_id: &str) -> (Sip, SocketAddr) {
        loop {
            let (msg, from) = self.recv("a BYE").await;
            if msg.method() == Some("BYE") && msg.get("Call-ID") == call_id {
                return (msg, from);
            }
        }
    }
}

impl Drop for Ua {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== SIP seen by {} ===\n{}",
                self.name,
                self.trace.lock().unwrap().join("\n")
            );
        }
    }
}

/// An established call, from the caller's side (§12.1.2).
struct Call {
    call_id: String,
    from: String,
    /// To with the callee's tag.
    to: String,
    /// The route set: the 200's Record-Route, reversed.
    route: Vec<String>,
    /// The callee's Contact.
    target: String,
}

enum Outcome {
    Answered(Call),
    Refused(Sip),
}

/// The caller (identified by P-Asserted-Identity `tel:…`, as an IMS core would assert it)
/// calls the callee through Kamailio; the callee answers 180 and 200 at once.
async fn place_call(caller: &Ua, callee: &Ua, kamailio: SocketAddr, caller_tel: &str) -> Outcome {
    let call_id = format!("{}@tollgate.test", common::unique("call"));
    let from = format!("<sip:{}@example.com>;tag={}-tag", caller.user, caller.name);
    let invite_via = caller.via();
    let invite = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: {invite_via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\n\
         To: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\n\
         P-Asserted-Identity: <{caller_tel}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{SDP}",
        ruri = callee.uri(),
        contact = caller.uri(),
        len = SDP.len(),
    );
    caller.send(&invite, kamailio).await;
    let ok = loop {
        tokio::select! {
            (msg, _) = caller.recv("a final response to INVITE") => {
                match msg.status() {
                    Some(s) if s < 200 => continue,
                    Some(s) if s < 300 => break msg,
                    _ => {
                        // ACK for a non-2xx final response: same branch, hop by hop (§17.1.1.3).
                        let ack = format!(
                            "ACK {ruri} SIP/2.0\r\nVia: {invite_via}\r\nMax-Forwards: 70\r\n\
                             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
                             Content-Length: 0\r\n\r\n",
                            ruri = callee.uri(),
                            to = msg.get("To"),
                        );
                        caller.send(&ack, kamailio).await;
                        return Outcome::Refused(msg);
                    }
                }
            }
            (msg, src) = callee.recv("the INVITE") => {
                if msg.method() == Some("INVITE") {
                    assert_eq!(src, kamailio, "the INVITE must come through Kamailio");
                    callee.respond(&msg, src, "180 Ringing", "", "").await;
                    let contact = format!(
                        "Contact: <{}>\r\nContent-Type: application/sdp\r\n",
                        callee.uri()
                    );
                    callee.respond(&msg, src, "200 OK", &contact, SDP).await;
                }
            }
        }
    };
    assert!(
        ok.body.contains("m=audio"),
        "the 200 carries the callee's SDP: {ok:?}"
    );
    let mut route: Vec<String> = ok
        .all("Record-Route")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|r| r.trim().to_string())
        .collect();
    route.reverse();
    let call = Call {
        call_id,
        from,
        to: ok.get("To").to_string(),
        route,
        target: uri_of(ok.get("Contact")).to_string(),
    };
    assert!(
        !call.route.is_empty(),
        "Kamailio must record-route, or ACK and BYE would bypass it"
    );
    let ack = in_dialog(caller, &call, "ACK", 1);
    caller.send(&ack, call.next_hop()).await;
    let (ack, src) = callee.recv("the ACK").await;
    assert_eq!(ack.method(), Some("ACK"), "{ack:?}");
    assert_eq!(src, kamailio, "the ACK must come through Kamailio");
    Outcome::Answered(call)
}

impl Call {
    /// Where in-dialog requests go: the first Route entry (loose routing, §12.2.1.1, §16.12).
    fn next_hop(&self) -> SocketAddr {
        hop_of(uri_of(&self.route[0]))
    }
}

/// An in-dialog request from the caller (§12.2.1.1): Request-URI the remote target, Route the
/// route set.
fn in_dialog(ua: &Ua, call: &Call, method: &str, cseq: u32) -> String {
    format!(
        "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nRoute: {route}\r\n\
         From: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        target = call.target,
        via = ua.via(),
        route = call.route.join(", "),
        from = call.from,
        to = call.to,
        id = call.call_id,
    )
}

/// The caller hangs up: BYE through Kamailio, the callee answers 200, the caller gets it.
async fn hang_up(caller: &Ua, callee: &Ua, call: &Call, kamailio: SocketAddr) {
    caller
        .send(&in_dialog(caller, call, "BYE", 2), call.next_hop())
        .await;
    let mut callee_done = false;
    let mut caller_done = false;
    while !(callee_done && caller_done) {
        tokio::select! {
            (msg, src) = callee.recv("the BYE"), if !callee_done => {
                if msg.method() == Some("BYE") {
                    assert_eq!(src, kamailio, "the BYE must come through Kamailio");
                    callee.respond(&msg, src, "200 OK", "", "").await;
                    callee_done = true;
                }
            }
            (msg, _) = caller.recv("the 200 to BYE"), if !caller_done => {
                if msg.cseq_method() == "BYE" && msg.status().is_some_and(|s| s >= 200) {
                    assert_eq!(msg.status(), Some(200), "{msg:?}");
                    caller_done = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rig

struct Rig {
    /// The test's name, for the saved frames.
    name: String,
    store: Store,
    server: Server,
    tap: Tap,
    kamailio: Kamailio,
}

impl Rig {
    /// Tollgate on a fresh store with the voice tariff and one account, the relay, and
    /// Kamailio with its peer open. `None` when Kamailio or the store is not there (plain
    /// `cargo test`).
    async fn start(
        name: &str,
        backend: Backend,
        account: &str,
        subscription: &str,
        balance: &str,
    ) -> Option<Rig> {
        let modules = kamailio_modules()?;
        let store = Store::new(backend).await?;
        store.create_account(account, balance, &[subscription]);
        // For 32260@3gpp.org, not the ext.01.001.8.32260@3gpp.org Kamailio sends: Tollgate
        // matches a Service-Context-Id to a tariff by its suffix.
        store.set_tariff(
            &Tariff::new("32260@3gpp.org", "seconds", "0.07")
                .quantum(30)
                .min_grant(1),
        );
        // Tcc (RFC 4006 §7) is Validity-Time × tcc_factor: 12 s instead of 6 s, so that a slow
        // machine cannot make the sweeper release a reservation Kamailio is about to report.
        let config = store.dir.join("tollgate.toml");
        std::fs::write(
            &config,
            format!("[credit_control]\nvalidity_time_s = {VALIDITY_S}\ntcc_factor = 4\n"),
        )
        .unwrap();
        let server = Server::start(&store, &["--config", config.to_str().unwrap()]);
        let tap = Tap::start(server.diameter).await;
        let mut kamailio = Kamailio::start(&modules, &store.dir.join("kamailio"), tap.addr);
        kamailio.wait_peer_open().await;
        Some(Rig {
            name: format!("{name}-{backend:?}"),
            store,
            server,
            tap,
            kamailio,
        })
    }

    /// Kamailio and Tollgate stop cleanly, the ledger verifies, every CCA Tollgate sent
    /// Kamailio dissects cleanly in tshark, the store goes.
    async fn finish(self) {
        let Rig {
            name,
            store,
            server,
            tap,
            kamailio,
        } = self;
        tap.save(&name);
        kamailio.stop().await;
        store.verify();
        tap.tshark_check(&store.dir.join("ccas.pcap"));
        server.stop();
        drop(tap);
        store.drop_store().await;
    }

    fn money(&self, account: &str) -> (i64, i64) {
        let a = self.store.account(account);
        (
            a["balance_minor"].as_i64().unwrap(),
            a["reserved_minor"].as_i64().unwrap(),
        )
    }

    /// (used_units, charged) of the account's charging data records.
    async fn charging_records(&self, account: &str) -> Vec<(i64, i64)> {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect(&self.store.url).await.unwrap();
        let rows = sqlx::query(
            "SELECT used_units, charged FROM v_charging_records WHERE account_id = $1 \
             ORDER BY record_id",
        )
        .bind(account)
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.ok();
        rows.iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The calls

/// A call talks past at least one CCR-U and hangs up; Kamailio reports the seconds in CCR-U
/// and CCR-T; Tollgate debits exactly those seconds at 0.07.
async fn call_charged(backend: Backend) {
    // Provisioned without the `+` Kamailio keeps in Subscription-Id-Data.
    let Some(rig) = Rig::start(
        "call_charged",
        backend,
        "alice",
        "e164:15550000001",
        "10.00",
    )
    .await
    else {
        return;
    };
    let caller = Ua::bind("caller", "alice").await;
    let callee = Ua::bind("callee", "bob").await;
    let sip = rig.kamailio.sip;

    let outcome = place_call(&caller, &callee, sip, "tel:+15550000001").await;
    let ex = rig.tap.credit_control();
    assert!(!ex.is_empty(), "Kamailio sent no CCR");
    assert_eq!(request_type(&ex[0].ccr), INITIAL);
    assert_granted(&ex[0]);
    let call = match outcome {
        Outcome::Answered(call) => call,
        Outcome::Refused(r) => panic!("call refused though the CCR-I was granted: {r:?}"),
    };
    let answered = Instant::now();

    // What Kamailio asked for: the caller's E.164 number with its `+` (Subscription-Id-Type
    // END_USER_E164, RFC 4006 §8.47), 30 s, in context ext.…32260@3gpp.org.
    let ccr_i = &ex[0].ccr;
    let sub = ccr_i.find(SUBSCRIPTION_ID).unwrap();
    assert_eq!(
        sub.member(SUBSCRIPTION_ID_DATA)
            .unwrap()
            .unwrap()
            .utf8()
            .unwrap(),
        "+15550000001"
    );
    assert_eq!(
        sub.member(SUBSCRIPTION_ID_TYPE)
            .unwrap()
            .unwrap()
            .enumerated()
            .unwrap(),
        0
    );
    let context = ccr_i.find(SERVICE_CONTEXT_ID).unwrap().utf8().unwrap();
    assert!(context.ends_with(".32260@3gpp.org"), "{context}");
    assert_eq!(cc_time(&mscc(ccr_i), REQUESTED_SERVICE_UNIT), Some(30));
    let cca_i = mscc(ex[0].cca.as_ref().unwrap());
    assert_eq!(cc_time(&cca_i, GRANTED_SERVICE_UNIT), Some(30));
    assert_eq!(
        cca_i
            .iter()
            .find(|a| a.is(VALIDITY_TIME))
            .map(|a| a.u32().unwrap()),
        Some(VALIDITY_S)
    );

    // Talk for 3 s of real time, and at least until a CCR-U has been answered.
    rig.tap
        .wait_for("answered CCR-U", |ex| {
            ex.iter()
                .any(|e| request_type(&e.ccr) == UPDATE && e.cca.is_some())
        })
        .await;
    let talked = answered.elapsed();
    if talked < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_secs(3) - talked).await;
    }
    hang_up(&caller, &callee, &call, sip).await;
    let ex = rig
        .tap
        .wait_for("answered CCR-T", |ex| {
            ex.iter()
                .any(|e| request_type(&e.ccr) == TERMINATION && e.cca.is_some())
        })
        .await;

    // CCR-I, one or more CCR-U, CCR-T; numbered 0, 1, 2… (RFC 4006 §8.2); all granted.
    let types: Vec<i32> = ex.iter().map(|e| request_type(&e.ccr)).collect();
    assert_eq!(types.first(), Some(&INITIAL), "{types:?}");
    assert_eq!(types.last(), Some(&TERMINATION), "{types:?}");
    assert!(types.len() >= 3, "{types:?}");
    assert!(
        types[1..types.len() - 1].iter().all(|t| *t == UPDATE),
        "{types:?}"
    );
    for (n, e) in ex.iter().enumerate() {
        assert_eq!(
            e.ccr.find(CC_REQUEST_NUMBER).unwrap().u32().unwrap() as usize,
            n
        );
        let cca = e.cca.as_ref().unwrap();
        assert_eq!(result_code(cca), 2001, "{}", refusal(cca));
    }
    // The seconds Kamailio reported: Used-Service-Unit in each CCR-U and the CCR-T. Kamailio
    // rounds a call up to whole seconds, so 3 s of talk are at least 3.
    let used: i64 = ex[1..]
        .iter()
        .map(|e| i64::from(cc_time(&mscc(&e.ccr), USED_SERVICE_UNIT).unwrap()))
        .sum();
    assert!(
        used >= 3,
        "Kamailio reported {used} s for a call of 3 s or more"
    );

    let (balance, reserved) = rig.money("alice");
    assert_eq!(reserved, 0, "a reservation stayed open");
    assert_eq!(
        balance,
        1000 - used * PRICE_MINOR_PER_S,
        "10.00 EUR less {used} s at 0.07"
    );
    assert_eq!(
        rig.charging_records("alice").await,
        vec![(used, used * PRICE_MINOR_PER_S)]
    );
    rig.finish().await;
}

/// No credit: CCA-I 4012, SIP 402 to the caller, the callee never rung, no money moved.
async fn no_credit(backend: Backend) {
    // Provisioned with the `+`, as Kamailio sends it.
    let Some(rig) = Rig::start("no_credit", backend, "bob", "e164:+15550000002", "0.00").await
    else {
        return;
    };
    let caller = Ua::bind("caller", "bob").await;
    let callee = Ua::bind("callee", "carol").await;

    let outcome = place_call(&caller, &callee, rig.kamailio.sip, "tel:+15550000002").await;
    let ex = rig.tap.credit_control();
    assert!(!ex.is_empty(), "Kamailio sent no CCR");
    assert_eq!(request_type(&ex[0].ccr), INITIAL);
    let cca = ex[0]
        .cca
        .as_ref()
        .expect("Tollgate did not answer the CCR-I");
    // DIAMETER_CREDIT_LIMIT_REACHED (RFC 4006 §9.1), not any other refusal.
    assert_eq!(result_code(cca), 4012, "{}", refusal(cca));
    let refused = match outcome {
        Outcome::Refused(r) => r,
        Outcome::Answered(_) => panic!("a call without credit was put through"),
    };
    assert_eq!(refused.status(), Some(402), "{refused:?}");
    assert_eq!(refused.all("X-Ro-Result-Code"), vec!["4012"]);
    // Kamailio replies only after the CCA; had it relayed the INVITE, it would be here now.
    let mut buf = [0u8; 2048];
    assert!(
        callee.sock.try_recv(&mut buf).is_err(),
        "the callee was rung"
    );

    // Kamailio 5.6 still sends CCR-T when the refused dialog fails; the CCR-I opened no
    // session, so Tollgate answers DIAMETER_UNKNOWN_SESSION_ID (RFC 6733 §7.1.5).
    let ex = rig
        .tap
        .wait_for("answered CCR-T", |ex| {
            ex.iter()
                .any(|e| request_type(&e.ccr) == TERMINATION && e.cca.is_some())
        })
        .await;
    let t = ex
        .iter()
        .find(|e| request_type(&e.ccr) == TERMINATION)
        .unwrap();
    assert_eq!(result_code(t.cca.as_ref().unwrap()), 5002);

    assert_eq!(rig.money("bob"), (0, 0));
    assert!(rig.charging_records("bob").await.is_empty());
    rig.finish().await;
}

/// Credit for 3 s: the CCA-I grants 3 s with Final-Unit-Indication TERMINATE (RFC 4006
/// §8.34, §5.6); Kamailio sends BYE to both parties when they run out, then CCR-T; the whole
/// credit is charged.
async fn final_grant(backend: Backend) {
    let Some(rig) = Rig::start("final_grant", backend, "carol", "e164:15550000003", "0.21").await
    else {
        return;
    };
    let caller = Ua::bind("caller", "carol").await;
    let callee = Ua::bind("callee", "dave").await;
    let sip = rig.kamailio.sip;

    let outcome = place_call(&caller, &callee, sip, "tel:+15550000003").await;
    let ex = rig.tap.credit_control();
    assert!(!ex.is_empty(), "Kamailio sent no CCR");
    assert_granted(&ex[0]);
    let call = match outcome {
        Outcome::Answered(call) => call,
        Outcome::Refused(r) => panic!("call refused though the CCR-I was granted: {r:?}"),
    };
    let grant = mscc(ex[0].cca.as_ref().unwrap());
    assert_eq!(
        cc_time(&grant, GRANTED_SERVICE_UNIT),
        Some(3),
        "0.21 EUR at 0.07/s"
    );
    assert_eq!(
        final_unit_action(&grant),
        Some(0),
        "Final-Unit-Indication with Final-Unit-Action TERMINATE with the last 3 s"
    );

    // Nobody hangs up: Kamailio ends the call on both legs, through its own dialog state.
    // Both BYEs are answered only once both have arrived: Kamailio 5.6's ims_dialog sends
    // them one after the other and checks the dialog is still confirmed before the second,
    // so a 200 to the first, handled in between by another Kamailio process, would stop the
    // second one.
    let ((to_caller, from_a), (to_callee, from_b)) =
        tokio::join!(caller.bye(&call.call_id), callee.bye(&call.call_id));
    assert_eq!(from_a, sip, "the caller's BYE must come from Kamailio");
    assert_eq!(from_b, sip, "the callee's BYE must come from Kamailio");
    caller.respond(&to_caller, from_a, "200 OK", "", "").await;
    callee.respond(&to_callee, from_b, "200 OK", "", "").await;
    // Kamailio's BYEs say why (ims_charging's "Reason: outofcredit").
    for bye in [&to_caller, &to_callee] {
        assert!(
            bye.all("Reason").iter().any(|r| r.contains("outofcredit")),
            "{bye:?}"
        );
    }

    let ex = rig
        .tap
        .wait_for("answered CCR-T", |ex| {
            ex.iter()
                .any(|e| request_type(&e.ccr) == TERMINATION && e.cca.is_some())
        })
        .await;
    let types: Vec<i32> = ex.iter().map(|e| request_type(&e.ccr)).collect();
    // The final grant gets no CCR-U (RFC 4006 §5.6.1).
    assert_eq!(types, vec![INITIAL, TERMINATION]);
    let t = &ex[1];
    assert_eq!(result_code(t.cca.as_ref().unwrap()), 2001);
    let used = cc_time(&mscc(&t.ccr), USED_SERVICE_UNIT).unwrap();
    assert!(
        used >= 3,
        "Kamailio ended the call after {used} s of a 3 s grant"
    );

    // Everything is charged, never more: the balance ends at 0.00 (credit limit 0.00).
    assert_eq!(rig.money("carol"), (0, 0));
    let records = rig.charging_records("carol").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1, 21, "{records:?}");
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// On the embedded store and on PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_charged_with_initial_update_and_termination() {
    call_charged(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_charged_with_initial_update_and_termination_on_postgres() {
    call_charged(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_without_credit_gets_402_and_is_not_charged() {
    no_credit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_without_credit_gets_402_and_is_not_charged_on_postgres() {
    no_credit(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_grant_makes_kamailio_end_the_call_and_charges_the_credit() {
    final_grant(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_grant_makes_kamailio_end_the_call_and_charges_the_credit_on_postgres() {
    final_grant(Backend::Postgres).await;
}
