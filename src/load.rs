//! `tollgate load`: a Diameter Ro load generator built on Tollgate's own peer layer. It drives
//! a server with session flows (CCR-I, N × CCR-U, CCR-T), ECUR pairs, IEC events or a mix,
//! over many subscribers and several connections, closed loop at a concurrency or open loop
//! at a target rate, and ends with a summary: CCR/s, answers by Result-Code and latency
//! percentiles from an HDR histogram.

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_codec::codes::*;
use tollgate_codec::{ApplicationId, Avp, CommandCode, Dictionary, Message};
use tollgate_peer::{LocalPeer, Node, PeerError, PeerLimits};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flow {
    /// SCUR: CCR-I, --updates × CCR-U, CCR-T.
    Session,
    /// ECUR: CCR-I reserving units, CCR-T debiting them.
    Ecur,
    /// IEC: one CCR-E DIRECT_DEBITING.
    Iec,
    /// One of each in turn.
    Mix,
    /// CCR-I only: the sessions stay open (until Tcc), to measure what an open session costs.
    Open,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The Diameter server to load.
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long, value_enum, default_value = "session")]
    pub flow: Flow,
    /// Open loop: start flows so that about this many CCR/s are offered.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<u64>,
    /// Closed loop: this many flows in progress at once [default 64].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many flows instead (whichever comes first).
    #[arg(long)]
    pub count: Option<u64>,
    /// Subscribers e164:1555100000 … (+N−1), used round robin.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u64,
    /// Create the subscribers and tariffs first (needs --database-url of the server's ledger).
    #[arg(long, requires = "database_url")]
    pub provision: bool,
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Diameter connections (each its own client peer).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// CCR-U per session flow.
    #[arg(long, default_value_t = 2)]
    pub updates: u32,
    /// Answer timeout (the client's Tx).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    #[arg(long, default_value = "32260@3gpp.org")]
    pub service_context: String,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput and p99 latency per second as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar (for scripts).
    #[arg(long)]
    pub quiet: bool,
}

/// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

#[derive(Default)]
struct Tally {
    answers: BTreeMap<u32, u64>,
    errors: u64,
    timeouts: u64,
    latency: Option<Histogram<u64>>,
}

impl Tally {
    fn record(&mut self, r: &Result<Message, PeerError>, took: Duration) {
        match r {
            Ok(m) => {
                *self
                    .answers
                    .entry(m.result_code().map(|c| c.0).unwrap_or(0))
                    .or_default() += 1;
                let h = self.latency.get_or_insert_with(histogram);
                let _ = h.record(took.as_micros().max(1) as u64);
            }
            Err(PeerError::Timeout(_)) => self.timeouts += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, o: Tally) {
        for (k, v) in o.answers {
            *self.answers.entry(k).or_default() += v;
        }
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        if let Some(h) = o.latency {
            let mine = self.latency.get_or_insert_with(histogram);
            let _ = mine.add(&h);
        }
    }
}

struct Shared {
    clients: Vec<(Arc<Node>, String)>,
    realm: String,
    args: LoadArgs,
    flows_started: AtomicU64,
    ccrs: AtomicU64,
    stop: AtomicBool,
    /// Per-second series for the plot: (CCRs answered, p99 µs).
    seconds: Mutex<Vec<(u64, u64)>>,
    window: Mutex<Histogram<u64>>,
}

impl Shared {
    fn ccr(&self, client: usize, session: &str, kind: i32, number: u32) -> Message {
        let host = &self.clients[client].0.local.origin_host;
        Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        )
        .with(Avp::from_str(SESSION_ID, session))
        .with(Avp::from_str(ORIGIN_HOST, host))
        .with(Avp::from_str(ORIGIN_REALM, "load.example"))
        .with(Avp::from_str(DESTINATION_REALM, &self.realm))
        .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
        .with(Avp::from_str(
            SERVICE_CONTEXT_ID,
            &self.args.service_context,
        ))
        .with(Avp::from_enum(CC_REQUEST_TYPE, kind))
        .with(Avp::from_u32(CC_REQUEST_NUMBER, number))
    }

    async fn ask(&self, client: usize, m: Message, tally: &mut Tally) -> Option<Message> {
        let (node, host) = &self.clients[client];
        let start = Instant::now();
        let r = node.request(Some(host), m, self.args.timeout).await;
        let took = start.elapsed();
        tally.record(&r, took);
        self.ccrs.fetch_add(1, Ordering::Relaxed);
        if r.is_ok() {
            if let Ok(mut w) = self.window.lock() {
                let _ = w.record(took.as_micros().max(1) as u64);
            }
        }
        r.ok()
    }

    /// One flow; returns when its last answer arrived.
    async fn flow(&self, n: u64, tally: &mut Tally) {
        let client = (n as usize) % self.clients.len();
        let sub = Avp::grouped(
            SUBSCRIPTION_ID,
            &[
                Avp::from_enum(SUBSCRIPTION_ID_TYPE, 0),
                Avp::from_str(
                    SUBSCRIPTION_ID_DATA,
                    &subscriber(n % self.args.subscribers.max(1)),
                ),
            ],
        );
        let host = &self.clients[client].0.local.origin_host;
        let session = format!("{host};{};{n}", std::process::id());
        let flow = match self.args.flow {
            Flow::Mix => [Flow::Session, Flow::Ecur, Flow::Iec][(n % 3) as usize],
            f => f,
        };
        let mscc = |rsu: Option<Avp>, usu: Option<Avp>| {
            let mut m = vec![Avp::from_u32(RATING_GROUP, 1)];
            if let Some(r) = rsu {
                m.push(Avp::grouped(REQUESTED_SERVICE_UNIT, &[r]));
            }
            if let Some(u) = usu {
                m.push(Avp::grouped(USED_SERVICE_UNIT, &[u]));
            }
            Avp::grouped(MULTIPLE_SERVICES_CREDIT_CONTROL, &m)
        };
        match flow {
            Flow::Session | Flow::Mix => {
                let i = self
                    .ccr(client, &session, 1, 0)
                    .with(sub.clone())
                    .with(mscc(Some(Avp::from_u32(CC_TIME, 60)), None));
                if !granted(self.ask(client, i, tally).await) {
                    return;
                }
                for k in 1..=self.args.updates {
                    let u = self.ccr(client, &session, 2, k).with(mscc(
                        Some(Avp::from_u32(CC_TIME, 60)),
                        Some(Avp::from_u32(CC_TIME, 30)),
                    ));
                    if !granted(self.ask(client, u, tally).await) {
                        return;
                    }
                }
                let t = self
                    .ccr(client, &session, 3, self.args.updates + 1)
                    .with(mscc(None, Some(Avp::from_u32(CC_TIME, 20))));
                self.ask(client, t, tally).await;
            }
            Flow::Ecur => {
                let i = self
                    .ccr(client, &session, 1, 0)
                    .with(sub.clone())
                    .with(mscc(
                        Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 5)),
                        None,
                    ));
                if !granted(self.ask(client, i, tally).await) {
                    return;
                }
                let t = self.ccr(client, &session, 3, 1).with(mscc(
                    None,
                    Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 3)),
                ));
                self.ask(client, t, tally).await;
            }
            Flow::Open => {
                let i = self
                    .ccr(client, &session, 1, 0)
                    .with(sub)
                    .with(mscc(Some(Avp::from_u32(CC_TIME, 60)), None));
                self.ask(client, i, tally).await;
            }
            Flow::Iec => {
                let e = self
                    .ccr(client, &session, 4, 0)
                    .with(sub)
                    .with(Avp::from_enum(REQUESTED_ACTION, 0))
                    .with(mscc(
                        Some(Avp::from_u64(CC_SERVICE_SPECIFIC_UNITS, 1)),
                        None,
                    ));
                self.ask(client, e, tally).await;
            }
        }
    }

    fn ccrs_per_flow(&self) -> f64 {
        match self.args.flow {
            Flow::Session => f64::from(self.args.updates + 2),
            Flow::Ecur => 2.0,
            Flow::Iec | Flow::Open => 1.0,
            Flow::Mix => (f64::from(self.args.updates + 2) + 3.0) / 3.0,
        }
    }

    /// Claims the next flow number, or None when the run is over.
    fn next_flow(&self, deadline: Instant) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return None;
        }
        let n = self.flows_started.fetch_add(1, Ordering::Relaxed);
        if self.args.count.is_some_and(|c| n >= c) {
            return None;
        }
        Some(n)
    }
}

/// Whether a session goes on after this answer: as a real client, it stops when the credit was
/// refused (a Result-Code other than 2001, at the top level or in an MSCC) or nothing came back.
fn granted(answer: Option<Message>) -> bool {
    let Some(a) = answer else { return false };
    let ok = |avps: &[Avp]| {
        avps.iter()
            .filter(|x| x.is(RESULT_CODE))
            .all(|x| x.u32().is_ok_and(|c| c == 2001))
    };
    a.result_code().is_some_and(|c| c.0 == 2001)
        && a.find_all(MULTIPLE_SERVICES_CREDIT_CONTROL)
            .all(|m| m.members().is_ok_and(|members| ok(&members)))
}

pub fn subscriber(i: u64) -> String {
    format!("{}", 1_555_100_000u64 + i)
}

/// Creates the load subscribers (EUR 1,000,000 each) and the tariffs the flows use.
async fn provision(url: &str, n: u64) -> anyhow::Result<()> {
    use tollgate_ledger::admin::{self, NewAccount, TariffSpec};
    use tollgate_ocs::{Clock, Currency, Money, ServiceKey, SubscriptionId, SystemClock, UnitType};
    let db = tollgate_ledger::Database::connect(url, &tollgate_ledger::PoolConfig::default())
        .await
        .with_context(|| format!("cannot open the ledger at {url} (check --database-url)"))?;
    db.migrate().await?;
    let now = SystemClock.now();
    let eur = Currency::parse("EUR")?;
    for (unit, price) in [(UnitType::Seconds, "0.001"), (UnitType::Units, "0.01")] {
        admin::set_tariff(
            &db,
            &TariffSpec {
                service: ServiceKey::context("32260@3gpp.org"),
                unit,
                currency: eur.clone(),
                price: price.into(),
                quantum: Some(60),
                min_grant: Some(1),
                quota: Default::default(),
                final_unit: Default::default(),
            },
            now,
        )
        .await?;
    }
    for i in 0..n {
        let account = NewAccount {
            id: format!("load-{i:07}"),
            currency: eur.clone(),
            balance: Money(100_000_000),
            credit_limit: Money(0),
            subscriptions: vec![SubscriptionId::e164(subscriber(i))],
            allowances: Vec::new(),
        };
        match admin::create_account(&db, &account, now).await {
            Ok(()) | Err(tollgate_ledger::AdminError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.subscribers == 0 {
        bail!("--connections and --subscribers must be at least 1");
    }
    if let (true, Some(url)) = (args.provision, &args.database_url) {
        provision(url, args.subscribers).await?;
    }
    let mut clients = Vec::with_capacity(args.connections);
    let mut realm = String::new();
    for i in 0..args.connections {
        let node = Node::new(
            LocalPeer::new(&format!("load-{i}.load.example"), "load.example"),
            PeerLimits::default(),
            Arc::new(Dictionary::builtin().clone()),
            None,
            &[ApplicationId::CREDIT_CONTROL],
        );
        let stream = tokio::net::TcpStream::connect(args.server)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {} (is tollgate serve running? check --server)",
                    args.server
                )
            })?;
        let _ = stream.set_nodelay(true);
        let host = node.connect_once(stream).await.map_err(|e| {
            anyhow::anyhow!("capabilities exchange with {} failed: {e}", args.server)
        })?;
        if realm.is_empty() {
            // Destination-Realm of every CCR: the realm the server announced in its CEA.
            realm = node.peer_realm(&host).unwrap_or_default();
        }
        clients.push((node, host));
    }
    let concurrency = match (args.rate, args.concurrency) {
        (Some(_), _) => 0,
        (None, c) => c.unwrap_or(64).max(1),
    };
    let duration = args.duration;
    let shared = Arc::new(Shared {
        clients,
        realm,
        args,
        flows_started: AtomicU64::new(0),
        ccrs: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        seconds: Mutex::new(Vec::new()),
        window: Mutex::new(histogram()),
    });
    let bar = if shared.args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(duration.as_secs().max(1));
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let start = Instant::now();
    let deadline = start + duration;
    // Per-second sampler for the progress bar and the plot.
    let sampler = {
        let s = Arc::clone(&shared);
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = s.ccrs.load(Ordering::Relaxed);
                let p99 = s
                    .window
                    .lock()
                    .map(|mut w| {
                        let v = w.value_at_quantile(0.99);
                        w.reset();
                        v
                    })
                    .unwrap_or(0);
                if let Ok(mut v) = s.seconds.lock() {
                    v.push((now - last, p99));
                }
                bar.set_position(start.elapsed().as_secs());
                bar.set_message(format!(
                    "{} CCR/s, p99 {:.2} ms",
                    now - last,
                    p99 as f64 / 1000.0
                ));
                last = now;
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut total = Tally::default();
    if concurrency > 0 {
        for _ in 0..concurrency {
            let s = Arc::clone(&shared);
            tasks.spawn(async move {
                let mut tally = Tally::default();
                while let Some(n) = s.next_flow(deadline) {
                    s.flow(n, &mut tally).await;
                }
                tally
            });
        }
    } else {
        // Open loop: flows start on schedule whether or not earlier ones were answered.
        let rate = shared.args.rate.unwrap_or(1).max(1) as f64;
        let per_flow = shared.ccrs_per_flow();
        let interval = Duration::from_secs_f64(per_flow / rate);
        let mut next = Instant::now();
        while let Some(n) = shared.next_flow(deadline) {
            let s = Arc::clone(&shared);
            tasks.spawn(async move {
                let mut tally = Tally::default();
                s.flow(n, &mut tally).await;
                tally
            });
            next += interval;
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
            // Reap finished flows so the set does not grow without bound, keeping their counts.
            while let Some(r) = tasks.try_join_next() {
                if let Ok(t) = r {
                    total.merge(t);
                }
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(t) = r {
            total.merge(t);
        }
    }
    let elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    bar.finish_and_clear();
    for (node, _) in &shared.clients {
        node.shutdown(Duration::from_secs(5)).await;
    }

    let answered: u64 = total.answers.values().sum();
    let h = total.latency.take().unwrap_or_else(histogram);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "flow": format!("{:?}", shared.args.flow).to_lowercase(),
        "duration_s": elapsed.as_secs_f64(),
        "flows": shared.flows_started.load(Ordering::Relaxed).min(shared.args.count.unwrap_or(u64::MAX)),
        "ccrs": answered + total.errors + total.timeouts,
        "answered": answered,
        "ccr_per_s": answered as f64 / elapsed.as_secs_f64().max(1e-9),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
        "answers": total.answers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": total.errors,
        "timeouts": total.timeouts,
    });
    println!(
        "{} CCRs in {:.1} s: {:.0} CCR/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; answers {}; errors {}; timeouts {}",
        summary["ccrs"],
        elapsed.as_secs_f64(),
        summary["ccr_per_s"].as_f64().unwrap_or(0.0),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        summary["answers"],
        total.errors,
        total.timeouts
    );
    if let Some(p) = &shared.args.json {
        std::fs::write(p, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &shared.args.plot {
        let series = shared.seconds.lock().map(|v| v.clone()).unwrap_or_default();
        std::fs::write(p, svg(&series)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if total.errors + total.timeouts == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Throughput (CCR/s) and p99 latency per second as two polylines.
fn svg(series: &[(u64, u64)]) -> String {
    let (w, h, pad) = (800.0, 300.0, 40.0);
    let n = series.len().max(2) as f64;
    let max_rate = series.iter().map(|s| s.0).max().unwrap_or(1).max(1) as f64;
    let max_p99 = series.iter().map(|s| s.1).max().unwrap_or(1).max(1) as f64;
    let line = |f: &dyn Fn(&(u64, u64)) -> f64, max: f64| {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let x = pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
                let y = h - pad - (h - 2.0 * pad) * f(s) / max;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{rate}"/>
<polyline fill="none" stroke="#d62728" stroke-width="2" points="{p99}"/>
<text x="{pad}" y="20" fill="#1f77b4">CCR/s (max {max_rate:.0})</text>
<text x="300" y="20" fill="#d62728">p99 latency (max {p99ms:.2} ms)</text>
<text x="{r}" y="{t}" text-anchor="end">seconds</text>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        t = h - 10.0,
        rate = line(&|s| s.0 as f64, max_rate),
        p99 = line(&|s| s.1 as f64, max_p99),
        p99ms = max_p99 / 1000.0,
    )
}
