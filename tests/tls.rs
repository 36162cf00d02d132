//! Diameter over TLS (RFC 6733 §13): TLS is negotiated on its own port before the CER.
//!
//! A CA and certificates are made at test time with the `openssl` CLI; the TLS client is
//! `openssl s_client` with raw Diameter bytes (built and decoded with `tollgate_codec`) piped
//! through its stdin and stdout, so the client side shares no TLS code with Tollgate.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Backend, Client, Server, Store};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_codec::codes::*;
use tollgate_codec::{Address, ApplicationId, Avp, CommandCode, Message, ResultCode};

/// Generous: a debug build on a loaded CI machine.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn have(tool: &str, probe: &[&str]) -> bool {
    Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// A key and a certificate in PEM files.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed CA (P-256) in `dir`: `NAME.pem`, `NAME.key`.
fn make_ca(dir: &Path, name: &str) -> Pem {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    Pem {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// A leaf certificate for `cn` signed by `ca`; `usage` is serverAuth or clientAuth.
fn make_leaf(dir: &Path, ca: &Pem, name: &str, cn: &str, usage: &str) -> Pem {
    static SERIAL: AtomicU32 = AtomicU32::new(1);
    let (cert, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\nsubjectAltName=DNS:{cn},DNS:localhost,IP:127.0.0.1\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let serial = format!(
        "{}{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca.cert.to_str().unwrap(),
            "-CAkey",
            ca.key.to_str().unwrap(),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
    Pem {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// Every certificate the tests use, under `dir/pki`.
struct Pki {
    /// Signs the server certificate; the TLS clients trust it.
    server_ca: Pem,
    server: Pem,
    /// The CA named by `tls_client_ca`.
    client_ca: Pem,
    good_client: Pem,
    /// A client certificate from a CA Tollgate does not know.
    rogue_client: Pem,
}

/// False (with the skip line printed) when the openssl CLI is not installed; under
/// scripts/test its absence fails the test (tollgate_testkit).
fn openssl_available() -> bool {
    tollgate_testkit::present(
        have("openssl", &["version"]),
        "openssl",
        "apt-get install openssl",
    )
}

fn make_pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = make_ca(&dir, "server-ca");
    let server = make_leaf(&dir, &server_ca, "server", "ocs.test", "serverAuth");
    let client_ca = make_ca(&dir, "client-ca");
    let good_client = make_leaf(&dir, &client_ca, "good-client", "good.test", "clientAuth");
    let rogue_ca = make_ca(&dir, "rogue-ca");
    let rogue_client = make_leaf(&dir, &rogue_ca, "rogue-client", "rogue.test", "clientAuth");
    Pki {
        server_ca,
        server,
        client_ca,
        good_client,
        rogue_client,
    }
}

/// Writes the `[diameter]` TLS section and returns the file.
fn write_config(store: &Store, pki: &Pki, client_ca: bool) -> PathBuf {
    let mut text = format!(
        "[diameter]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.server.cert.display().to_string(),
        pki.server.key.display().to_string(),
    );
    if client_ca {
        text.push_str(&format!(
            "tls_client_ca = {:?}\n",
            pki.client_ca.cert.display().to_string()
        ));
    }
    let path = store.dir.join("tollgate-tls.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `tollgate serve --config FILE` like `Server::start_with`, but keeping the whole listening
/// line: its `diameter-tls=ADDR` part is the TLS port.
fn start_tls_server(store: &Store, config: &Path) -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--origin-host", "ocs.test", "--origin-realm", "test"])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(&store.dir)
        .arg("--database-url")
        .arg(&store.url)
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next()
        .expect("tollgate serve exited before printing its listening line")
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    let (diameter, admin) = common::parse_listening(&line);
    let tls = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("diameter-tls="))
        .unwrap_or_else(|| panic!("no diameter-tls= in the listening line {line:?}"))
        .parse()
        .unwrap();
    (
        Server {
            child,
            diameter,
            admin,
        },
        tls,
    )
}

/// `openssl s_client` connected to Tollgate's TLS port, verifying the server certificate
/// against the server CA and the name ocs.test, optionally presenting a client certificate.
struct TlsClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    stderr_file: PathBuf,
    hop_by_hop: u32,
}

impl TlsClient {
    fn connect(addr: SocketAddr, pki: &Pki, cert: Option<&Pem>, log: PathBuf) -> TlsClient {
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .args([
                "-servername",
                "ocs.test",
                "-verify_hostname",
                "ocs.test",
                "-verify_return_error",
            ])
            .arg("-CAfile")
            .arg(&pki.server_ca.cert);
        if let Some(c) = cert {
            cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        TlsClient {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            child,
            stderr_file: log,
            hop_by_hop: 0x7100_0000,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Sends a request (fresh identifiers) and returns the next message read, or `None` when
    /// the connection closed (or nothing came within the timeout).
    async fn exchange(&mut self, mut m: Message) -> Option<Message> {
        self.hop_by_hop += 1;
        m.header.hop_by_hop = self.hop_by_hop;
        m.header.end_to_end = self.hop_by_hop ^ 0x00ab_0000;
        // A write may fail when the server has already refused the handshake: no answer.
        if self.stdin.write_all(&m.to_bytes()).await.is_err() || self.stdin.flush().await.is_err() {
            return None;
        }
        let answer = tokio::time::timeout(IO_TIMEOUT, read_frame(&mut self.stdout))
            .await
            .ok()
            .flatten()?;
        let answer = Message::decode(&answer)
            .unwrap_or_else(|e| panic!("undecodable message from Tollgate over TLS: {e}"));
        assert_eq!(
            answer.header.hop_by_hop, self.hop_by_hop,
            "answer to another request: {answer:?}"
        );
        Some(answer)
    }

    async fn close(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn read_frame(r: &mut tokio::process::ChildStdout) -> Option<Bytes> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await.ok()?;
    assert_eq!(head[0], 1, "not a Diameter version 1 frame");
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    assert!(
        (20..1 << 20).contains(&len),
        "implausible Diameter length {len}"
    );
    let mut frame = vec![0u8; len];
    frame[..4].copy_from_slice(&head);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(Bytes::from(frame))
}

fn base_request(command: CommandCode, host: &str) -> Message {
    Message::request(command, ApplicationId::COMMON, false)
        .with(Avp::from_str(ORIGIN_HOST, host))
        .with(Avp::from_str(ORIGIN_REALM, "test"))
}

fn cer(host: &str) -> Message {
    base_request(CommandCode::CAPABILITIES_EXCHANGE, host)
        .with(Avp::from_address(
            HOST_IP_ADDRESS,
            &Address::from(std::net::IpAddr::from([127, 0, 0, 1])),
        ))
        .with(Avp::from_u32(VENDOR_ID, 0))
        .with(Avp::from_str(PRODUCT_NAME, "tollgate-tls-test"))
        .with(Avp::from_u32(
            AUTH_APPLICATION_ID,
            ApplicationId::CREDIT_CONTROL.0,
        ))
}

fn assert_answer(m: &Message, command: CommandCode, what: &str) {
    assert!(!m.is_request(), "{what}: expected an answer, got {m:?}");
    assert_eq!(m.header.command, command, "{what}: wrong command in {m:?}");
    assert!(
        m.result_code().is_some_and(ResultCode::is_success),
        "{what}: not DIAMETER_SUCCESS: {m:?}"
    );
    assert_eq!(
        m.origin_host(),
        Some("ocs.test"),
        "{what}: Origin-Host in {m:?}"
    );
}

/// CER/CEA, DWR/DWA and DPR/DPA over one TLS connection.
async fn full_exchange(c: &mut TlsClient, host: &str) {
    let cea = c
        .exchange(cer(host))
        .await
        .unwrap_or_else(|| panic!("no CEA over TLS for {host}; s_client said:\n{}", c.stderr()));
    assert_answer(&cea, CommandCode::CAPABILITIES_EXCHANGE, "CEA");
    assert!(
        cea.find_all(AUTH_APPLICATION_ID)
            .any(|a| a.u32().unwrap() == 4),
        "the CEA does not advertise credit control: {cea:?}"
    );
    let dwa = c
        .exchange(
            base_request(CommandCode::DEVICE_WATCHDOG, host)
                .with(Avp::from_u32(ORIGIN_STATE_ID, 1)),
        )
        .await
        .unwrap_or_else(|| panic!("no DWA over TLS; s_client said:\n{}", c.stderr()));
    assert_answer(&dwa, CommandCode::DEVICE_WATCHDOG, "DWA");
    let dpa = c
        .exchange(
            base_request(CommandCode::DISCONNECT_PEER, host)
                .with(Avp::from_enum(DISCONNECT_CAUSE, 2)),
        )
        .await
        .unwrap_or_else(|| panic!("no DPA over TLS; s_client said:\n{}", c.stderr()));
    assert_answer(&dpa, CommandCode::DISCONNECT_PEER, "DPA");
}

/// Plain TCP on the normal port keeps working next to the TLS port.
async fn plain_tcp_works(server: &Server, host: &str) {
    let client = Client::connect(server.diameter, host).await;
    assert_eq!(client.server_host, "ocs.test");
    let dwa = client
        .ask(
            base_request(CommandCode::DEVICE_WATCHDOG, host)
                .with(Avp::from_u32(ORIGIN_STATE_ID, 1)),
        )
        .await;
    assert_answer(&dwa, CommandCode::DEVICE_WATCHDOG, "DWA over TCP");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cer_dwr_dpr_without_client_certificates() {
    if !openssl_available() {
        return;
    }
    let store = Store::new(Backend::Sqlite).await.unwrap();
    let pki = make_pki(&store.dir);
    let config = write_config(&store, &pki, false);
    let (server, tls) = start_tls_server(&store, &config);

    let mut c = TlsClient::connect(tls, &pki, None, store.dir.join("s_client-anon.log"));
    full_exchange(&mut c, "anon.test").await;
    c.close().await;

    plain_tcp_works(&server, "plain.test").await;

    // A second TLS connection after the first one's DPR: the listener is still serving.
    let mut c = TlsClient::connect(tls, &pki, None, store.dir.join("s_client-again.log"));
    full_exchange(&mut c, "again.test").await;
    c.close().await;

    server.stop();
    store.drop_store().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_ca_admits_its_certificates_and_refuses_others() {
    if !openssl_available() {
        return;
    }
    let store = Store::new(Backend::Sqlite).await.unwrap();
    let pki = make_pki(&store.dir);
    let config = write_config(&store, &pki, true);
    let (server, tls) = start_tls_server(&store, &config);

    // A certificate from tls_client_ca: TLS, CER/CEA, DWR/DWA, DPR/DPA.
    let mut c = TlsClient::connect(
        tls,
        &pki,
        Some(&pki.good_client),
        store.dir.join("s_client-good.log"),
    );
    full_exchange(&mut c, "good.test").await;
    c.close().await;

    // A certificate from another CA, and no certificate at all: the handshake fails, the
    // CER gets no CEA.
    for (name, cert) in [("rogue", Some(&pki.rogue_client)), ("nocert", None)] {
        let log = store.dir.join(format!("s_client-{name}.log"));
        let mut c = TlsClient::connect(tls, &pki, cert, log);
        let answer = c.exchange(cer(&format!("{name}.test"))).await;
        assert!(
            answer.is_none(),
            "{name}: Tollgate answered over TLS: {answer:?}"
        );
        // s_client ends once the server aborts the handshake; its error names the alert.
        let status = tokio::time::timeout(IO_TIMEOUT, c.child.wait()).await;
        let stderr = c.stderr();
        assert!(
            matches!(status, Ok(Ok(s)) if !s.success()),
            "{name}: s_client did not fail ({status:?}); it said:\n{stderr}"
        );
        assert!(
            stderr.contains("alert"),
            "{name}: no TLS alert from the server; s_client said:\n{stderr}"
        );
        println!(
            "{name}: refused as expected: {}",
            stderr
                .lines()
                .find(|l| l.contains("alert"))
                .unwrap_or_default()
        );
        c.close().await;
    }

    plain_tcp_works(&server, "plain.test").await;

    // The refusals did not disturb the listener: a good client still gets in.
    let mut c = TlsClient::connect(
        tls,
        &pki,
        Some(&pki.good_client),
        store.dir.join("s_client-good2.log"),
    );
    full_exchange(&mut c, "good2.test").await;
    c.close().await;

    server.stop();
    store.drop_store().await;
}

/// A rustls client (tokio-rustls) verifying the server certificate against the server CA and
/// the name ocs.test, optionally presenting a client certificate.
async fn rustls_stream(
    addr: SocketAddr,
    pki: &Pki,
    cert: Option<&Pem>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in tollgate_peer::tls::certificates(&pki.server_ca.cert).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match cert {
        Some(p) => builder
            .with_client_auth_cert(
                tollgate_peer::tls::certificates(&p.cert).unwrap(),
                tollgate_peer::tls::private_key(&p.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("ocs.test").unwrap();
    connector.connect(name, tcp).await
}

/// Tollgate's own peer layer as a client, over a rustls client stream.
fn client_node(host: &str) -> std::sync::Arc<tollgate_peer::Node> {
    tollgate_peer::Node::new(
        tollgate_peer::LocalPeer::new(host, "test"),
        tollgate_peer::PeerLimits::default(),
        std::sync::Arc::new(tollgate_codec::Dictionary::builtin().clone()),
        None,
        &[ApplicationId::CREDIT_CONTROL],
    )
}

/// A rustls client completes CER/CEA, a CCR-I/CCR-T and DPR/DPA; with client certificates
/// required, a rustls client with a certificate from another CA (or none) gets no CEA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_completes_the_exchange() {
    if !openssl_available() {
        return;
    }
    let store = Store::new(Backend::Sqlite).await.unwrap();
    common::provision(&store, "10.00");
    let pki = make_pki(&store.dir);
    let config = write_config(&store, &pki, true);
    let (server, tls) = start_tls_server(&store, &config);

    let node = client_node("good.test");
    let stream = rustls_stream(tls, &pki, Some(&pki.good_client))
        .await
        .unwrap();
    let peer = node.connect_once(stream).await.unwrap();
    assert_eq!(peer, "ocs.test");
    let ccr = |kind, number| common::ccr("good.test", "good.test;rustls;1", kind, number);
    let i = ccr(1, 0)
        .with(common::subscription(0, "15550000001"))
        .with(common::mscc(
            None,
            Some(Avp::from_u32(CC_TIME, 60)),
            None,
            None,
        ));
    let a = node.request(Some(&peer), i, IO_TIMEOUT).await.unwrap();
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    let t = ccr(3, 1).with(common::mscc(
        None,
        None,
        Some(Avp::from_u32(CC_TIME, 25)),
        Some(2),
    ));
    let a = node.request(Some(&peer), t, IO_TIMEOUT).await.unwrap();
    assert_eq!(a.result_code(), Some(ResultCode::SUCCESS));
    // DPR/DPA, then the connection closes.
    node.shutdown(IO_TIMEOUT).await;
    assert_eq!(store.account("alice")["balance_minor"].as_i64(), Some(975));

    for (name, cert) in [("rogue", Some(&pki.rogue_client)), ("nocert", None)] {
        let node = client_node(&format!("{name}.test"));
        // TLS 1.3 reports a refused client certificate after the client's side of the
        // handshake, so the refusal shows at the handshake or as a CER without CEA.
        match rustls_stream(tls, &pki, cert).await {
            Err(e) => println!("{name}: handshake refused: {e}"),
            Ok(stream) => {
                let r = node.connect_once(stream).await;
                assert!(r.is_err(), "{name}: capabilities exchange over TLS: {r:?}");
                println!("{name}: no CEA, as expected");
            }
        }
    }
    server.stop();
    store.verify();
    store.drop_store().await;
}
