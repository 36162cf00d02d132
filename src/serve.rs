//! `tollgate serve`: the daemon. Wires the ledger, the credit-control application, the
//! Diameter peer node and the admin HTTP listener; prints one "listening on" line when
//! ready; on SIGTERM or SIGINT sends DPR to every peer, lets requests in flight finish and
//! exits 0.

use crate::admin;
use crate::config::Config;
use anyhow::{anyhow, Context};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_cc::{CcConfig, CreditControl};
use tollgate_codec::{Limits, ResultCode};
use tollgate_ledger::{BatchConfig, LedgerConfig, PoolConfig, SqlLedger};
use tollgate_ocs::{Clock, Ledger, SystemClock};
use tollgate_peer::{Application, LocalPeer, Node, PeerLimits, UnknownAvpPolicy};
use tracing::{info, warn};

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see tollgate.example.toml).
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seed a demo account and tariffs into a new store.
    #[arg(long)]
    pub demo: bool,
    /// Diameter TCP listen address [default 127.0.0.1:3868].
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address (/metrics, /health, /ready) [default 127.0.0.1:9464].
    #[arg(long, env = "TOLLGATE_ADMIN")]
    pub admin: Option<SocketAddr>,
    #[arg(long, env = "TOLLGATE_ORIGIN_HOST")]
    pub origin_host: Option<String>,
    #[arg(long, env = "TOLLGATE_ORIGIN_REALM")]
    pub origin_realm: Option<String>,
    /// Directory of the embedded store [default ./tollgate-data].
    #[arg(long, env = "TOLLGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… or sqlite://… [default: the embedded store in the data directory].
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Benchmark baseline only: answer every CCR with a grant and store nothing.
    #[arg(long)]
    pub no_ledger: bool,
    /// Outbound Diameter peer to keep connected (repeatable); ORIGIN-HOST=ADDRESS:PORT names
    /// the Origin-Host it must answer with.
    #[arg(long = "peer", value_name = "[ORIGIN-HOST=]ADDRESS:PORT")]
    pub peers: Vec<crate::config::PeerTarget>,
}

/// The configuration after the file, the environment and the flags.
pub fn effective_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        cfg.diameter.listen = v;
    }
    if let Some(v) = args.admin {
        cfg.admin.listen = v;
    }
    if let Some(v) = &args.origin_host {
        cfg.diameter.origin_host = v.clone();
    }
    if let Some(v) = &args.origin_realm {
        cfg.diameter.origin_realm = v.clone();
    }
    if let Some(v) = &args.data_dir {
        cfg.ledger.data_dir = v.clone();
    }
    if let Some(v) = &args.database_url {
        cfg.ledger.database_url = Some(v.clone());
    }
    cfg.diameter.peers.extend(args.peers.iter().cloned());
    cfg.check()?;
    Ok(cfg)
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow!("cannot listen for {what} on {addr}: {e} (choose another address with {flag})")
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = effective_config(&args)?;
    let url = cfg.database_url();
    if url.starts_with("sqlite:") {
        let dir = &cfg.ledger.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow!(
                "cannot create the data directory {}: {e} (set --data-dir to a writable directory)",
                dir.display()
            )
        })?;
        let probe = dir.join(".tollgate-write-test");
        std::fs::write(&probe, b"").map_err(|e| {
            anyhow!("the data directory {} is not writable: {e} (set --data-dir to a writable directory)", dir.display())
        })?;
        let _ = std::fs::remove_file(probe);
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ledger_cfg = LedgerConfig {
        pool: PoolConfig {
            max_connections: cfg.ledger.max_connections,
            acquire_timeout_ms: cfg.ledger.acquire_timeout_ms,
        },
        batch: BatchConfig {
            max_batch: cfg.ledger.batch_max,
            max_wait_us: cfg.ledger.batch_wait_us,
            workers: cfg.ledger.batch_workers,
            ..BatchConfig::default()
        },
        ..LedgerConfig::default()
    };
    let ledger = tokio::time::timeout(
        Duration::from_secs(15),
        SqlLedger::connect(&url, ledger_cfg, Arc::clone(&clock)),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "cannot open the ledger at {}: no answer within 15 s (check --database-url)",
            redact(&url)
        )
    })?
    .map_err(|e| {
        anyhow!(
            "cannot open the ledger at {}: {e} (check --database-url)",
            redact(&url)
        )
    })?;
    if args.demo {
        crate::demo::seed(ledger.database(), clock.now()).await?;
    }

    let dict = Arc::new(crate::config::load_dictionary(
        &cfg.diameter.dictionaries,
        cfg.diameter.wireshark_dictionary.as_deref(),
        "diameter.wireshark_dictionary",
    )?);
    if let Some(p) = &cfg.diameter.wireshark_dictionary {
        info!(
            path = %p.display(),
            avps = dict.avps().count(),
            "Wireshark dictionary merged under ours"
        );
    }
    let cc = &cfg.credit_control;
    let cc_cfg = CcConfig {
        origin_host: cfg.diameter.origin_host.clone(),
        origin_realm: cfg.diameter.origin_realm.clone(),
        validity_time_s: cc.validity_time_s,
        tcc_factor: cc.tcc_factor,
        credit_control_failure_handling: cc.ccfh()?,
        direct_debiting_failure_handling: cc.ddfh()?,
        cc_session_failover: cc.cc_session_failover.then_some(1),
        cost_information: cc.cost_information,
        store_failure_result: ResultCode(cc.store_failure_result),
        max_reported_usage: tollgate_cc::config::UsageCaps {
            seconds: cc.max_reported_seconds,
            octets: cc.max_reported_octets,
            units: cc.max_reported_units,
            ..Default::default()
        },
    };
    let ledger_dyn: Arc<dyn Ledger> = if args.no_ledger {
        warn!("--no-ledger: answering every CCR with a grant and charging nothing (benchmark baseline)");
        Arc::new(crate::baseline::NoLedger)
    } else {
        Arc::new(ledger.clone())
    };
    let app = CreditControl::new(cc_cfg, Arc::clone(&ledger_dyn), Arc::clone(&clock));
    let metrics = admin::Metrics::install()?;
    let app: Arc<dyn Application> = Arc::new(admin::Instrumented::new(app, metrics.clone()));

    let d = &cfg.diameter;
    let mut local = LocalPeer::new(&d.origin_host, &d.origin_realm);
    local.host_ip_addresses = vec![d.listen.ip()];
    local.origin_state_id = if d.origin_state_id != 0 {
        d.origin_state_id
    } else {
        // RFC 6733 §8.16: a value that grows with every restart.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_secs() as u32)
            .unwrap_or(1)
    };
    if !d.allowed_peers.is_empty() {
        local.allowed_peers = Some(d.allowed_peers.clone());
    }
    local.unknown_avps = UnknownAvpPolicy {
        default: d.unknown_vendor_avps.rule(),
        accept_from: d.unknown_vendor_avps_accept_from.clone(),
    };
    let limits = PeerLimits {
        max_connections: d.max_connections,
        max_in_flight_per_peer: d.max_in_flight_per_peer,
        codec: Limits {
            max_message_len: d.max_message_len,
            max_avps: d.max_avps,
            max_depth: d.max_depth,
        },
        cer_timeout: Duration::from_millis(d.cer_timeout_ms),
        tw: Duration::from_millis(d.tw_ms),
        tc: Duration::from_millis(d.tc_ms),
        dedup_capacity: d.dedup_capacity,
        dedup_ttl: Duration::from_secs(d.dedup_ttl_s),
        ..PeerLimits::default()
    };
    let node = Node::new(local, limits, dict, Some(app), &[]);

    let diameter = bind(d.listen, "Diameter", "--listen").await?;
    let admin_listener = bind(cfg.admin.listen, "the admin HTTP endpoint", "--admin").await?;
    let tls = match (&d.tls_listen, &d.tls_cert, &d.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let acceptor = tollgate_peer::tls::acceptor(cert, key, d.tls_client_ca.as_deref())?;
            Some((
                bind(*addr, "Diameter over TLS", "diameter.tls_listen").await?,
                acceptor,
            ))
        }
        _ => None,
    };
    let diameter_addr = diameter.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let mut line = format!("listening on diameter={diameter_addr} admin={admin_addr}");
    if let Some((l, _)) = &tls {
        line.push_str(&format!(" diameter-tls={}", l.local_addr()?));
    }
    println!("{line}");
    std::io::stdout().flush().ok();
    info!("{line}");

    let n = Arc::clone(&node);
    let tcp_task = tokio::spawn(async move { n.serve_tcp(diameter).await });
    let tls_task = tls.map(|(listener, acceptor)| {
        let n = Arc::clone(&node);
        tokio::spawn(async move {
            n.serve(listener, move |s| {
                let a = acceptor.clone();
                async move { a.accept(s).await }
            })
            .await
        })
    });
    for p in &d.peers {
        node.connect_to(p.address, p.host.as_deref());
    }
    let shutdown = node.shutdown_token();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics,
        Arc::clone(&node),
        ledger.clone(),
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep(
        Arc::clone(&ledger_dyn),
        Arc::clone(&clock),
        Duration::from_millis(cfg.ledger.sweep_interval_ms.max(10)),
        shutdown.clone(),
    ));

    let session_control = (!args.no_ledger).then(|| {
        let cc = &cfg.credit_control;
        let control = crate::session_control::SessionControl {
            node: Arc::clone(&node),
            db: ledger.database().clone(),
            ledger: Arc::clone(&ledger_dyn),
            clock: Arc::clone(&clock),
            poll: Duration::from_millis(cc.server_request_poll_ms),
            timeout: Duration::from_millis(cc.server_request_timeout_ms),
        };
        tokio::spawn(control.run(shutdown.clone()))
    });

    wait_for_signal().await?;
    info!("shutting down: DPR to peers, finishing requests in flight");
    node.shutdown(Duration::from_secs(30)).await;
    let _ = tcp_task.await;
    if let Some(t) = tls_task {
        let _ = t.await;
    }
    let _ = sweeper.await;
    if let Some(t) = session_control {
        let _ = t.await;
    }
    let _ = admin_task.await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Releases reservations whose Tcc passed (RFC 4006 §7: the server releases the
/// reservation of a session the client abandoned).
async fn sweep(
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match ledger.expire(clock.now()).await {
            Ok(r) if r.expired > 0 => info!(expired = r.expired, "reservations expired at Tcc"),
            Ok(_) => {}
            Err(e) => warn!("expiry sweep failed: {e}"),
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot install the SIGINT handler")?,
    }
    Ok(())
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
