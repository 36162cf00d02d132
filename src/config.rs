//! The TOML configuration (`tollgate.example.toml` documents every key). Unknown keys are
//! refused with the file, line and key; `TOLLGATE_*` environment variables and command-line
//! flags override the file; with no file at all the defaults in `tollgate.example.toml` apply.

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tollgate_codec::{Dictionary, WiresharkDictionary};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub diameter: DiameterConfig,
    pub admin: AdminConfig,
    pub ledger: LedgerSection,
    pub credit_control: CreditControlConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiameterConfig {
    /// TCP listen address.
    pub listen: SocketAddr,
    pub origin_host: String,
    pub origin_realm: String,
    /// Origin-State-Id; 0 = derive from the start time (grows on every restart).
    pub origin_state_id: u32,
    /// Peers allowed to connect (Origin-Host); empty = anyone.
    pub allowed_peers: Vec<String>,
    /// Unknown vendor AVPs with the M bit inside open Grouped AVPs: refused with 5001
    /// (RFC 6733 §4.1) or accepted, logged and counted.
    pub unknown_vendor_avps: UnknownVendorAvps,
    /// Origin-Hosts whose unknown vendor AVPs are accepted whatever `unknown_vendor_avps` says.
    pub unknown_vendor_avps_accept_from: Vec<String>,
    /// Outbound peers to keep connected: "ADDRESS:PORT", or "ORIGIN-HOST=ADDRESS:PORT".
    pub peers: Vec<PeerTarget>,
    /// Extra dictionary XML files.
    pub dictionaries: Vec<PathBuf>,
    /// Wireshark's Diameter dictionary (its top `dictionary.xml`): fills in the AVPs and
    /// commands our dictionaries do not define (`tollgate_codec::wireshark`).
    pub wireshark_dictionary: Option<PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// With this CA file, TLS clients must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    pub max_connections: usize,
    pub max_in_flight_per_peer: usize,
    pub max_message_len: u32,
    pub max_avps: usize,
    pub max_depth: usize,
    pub cer_timeout_ms: u64,
    pub tw_ms: u64,
    pub tc_ms: u64,
    pub dedup_capacity: usize,
    pub dedup_ttl_s: u64,
}

/// `diameter.unknown_vendor_avps`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownVendorAvps {
    #[default]
    Refuse,
    Accept,
}

impl UnknownVendorAvps {
    pub fn rule(self) -> tollgate_codec::UnknownAvps {
        match self {
            UnknownVendorAvps::Refuse => tollgate_codec::UnknownAvps::Refuse,
            UnknownVendorAvps::Accept => tollgate_codec::UnknownAvps::AcceptVendorInOpenGroups,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin HTTP listen address (/metrics, /health, /ready).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// postgres://… or sqlite://…; empty = the embedded store in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// Longest wait for a database connection before a request is answered with
    /// `credit_control.store_failure_result` (keep it well under the clients' Tx of 10 s).
    pub acquire_timeout_ms: u64,
    pub batch_max: usize,
    pub batch_wait_us: u64,
    /// Group-commit workers, each with its own queue and (while a batch runs) its own
    /// connection; operations are sharded among them by account. Forced to 1 on SQLite.
    pub batch_workers: usize,
    /// How often the sweeper expires abandoned reservations (Tcc), milliseconds.
    pub sweep_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditControlConfig {
    pub validity_time_s: u32,
    pub tcc_factor: u32,
    /// "terminate" | "continue" | "retry_and_terminate"; absent = not sent.
    pub credit_control_failure_handling: Option<String>,
    /// "terminate_or_buffer" | "continue"; absent = not sent.
    pub direct_debiting_failure_handling: Option<String>,
    pub cc_session_failover: bool,
    pub cost_information: bool,
    /// Result-Code when the ledger is unavailable: 5012 or 3004.
    pub store_failure_result: u32,
    /// How often queued RAR/ASR (`session_requests`) are looked for, milliseconds.
    pub server_request_poll_ms: u64,
    /// How long a RAR or ASR waits for its RAA/ASA before another attempt, milliseconds.
    pub server_request_timeout_ms: u64,
    /// The most one usage report is charged for (more is charged up to this, logged and
    /// counted): seconds, octets, service units.
    pub max_reported_seconds: u64,
    pub max_reported_octets: u64,
    pub max_reported_units: u64,
}

/// An outbound peer (`diameter.peers`, `serve --peer`): its address, and optionally the
/// Origin-Host it must answer with (`ORIGIN-HOST=ADDRESS:PORT`). A named peer is known before
/// its CEA, so when it connects to us while we connect to it the election settles which
/// connection stays (RFC 6733 §5.6.4), and a CEA from another host is refused.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PeerTarget {
    pub host: Option<String>,
    pub address: SocketAddr,
}

impl std::str::FromStr for PeerTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, addr) = match s.split_once('=') {
            Some((h, a)) if !h.trim().is_empty() => (Some(h.trim().to_string()), a),
            Some(_) => return Err(format!("peer {s:?}: the Origin-Host before '=' is empty")),
            None => (None, s),
        };
        let address = addr.trim().parse().map_err(|_| {
            format!("peer {s:?}: write ADDRESS:PORT or ORIGIN-HOST=ADDRESS:PORT, e.g. ocs-b.example.net=10.0.0.2:3868")
        })?;
        Ok(PeerTarget { host, address })
    }
}

impl TryFrom<String> for PeerTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Default for DiameterConfig {
    fn default() -> Self {
        let peer = tollgate_peer::PeerLimits::default();
        DiameterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3868)),
            origin_host: "tollgate.localdomain".into(),
            origin_realm: "localdomain".into(),
            origin_state_id: 0,
            allowed_peers: Vec::new(),
            unknown_vendor_avps: UnknownVendorAvps::default(),
            unknown_vendor_avps_accept_from: Vec::new(),
            peers: Vec::new(),
            dictionaries: Vec::new(),
            wireshark_dictionary: None,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_connections: peer.max_connections,
            max_in_flight_per_peer: peer.max_in_flight_per_peer,
            max_message_len: peer.codec.max_message_len,
            max_avps: peer.codec.max_avps,
            max_depth: peer.codec.max_depth,
            cer_timeout_ms: peer.cer_timeout.as_millis() as u64,
            tw_ms: peer.tw.as_millis() as u64,
            tc_ms: peer.tc.as_millis() as u64,
            dedup_capacity: peer.dedup_capacity,
            dedup_ttl_s: peer.dedup_ttl.as_secs(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            database_url: None,
            data_dir: PathBuf::from("./tollgate-data"),
            max_connections: 8,
            acquire_timeout_ms: 2000,
            batch_max: 256,
            batch_wait_us: 1000,
            batch_workers: 4,
            sweep_interval_ms: 1000,
        }
    }
}

impl Default for CreditControlConfig {
    fn default() -> Self {
        let d = tollgate_cc::CcConfig::default();
        CreditControlConfig {
            validity_time_s: d.validity_time_s,
            tcc_factor: d.tcc_factor,
            credit_control_failure_handling: None,
            direct_debiting_failure_handling: None,
            cc_session_failover: false,
            cost_information: d.cost_information,
            store_failure_result: d.store_failure_result.0,
            server_request_poll_ms: 250,
            server_request_timeout_ms: 10_000,
            max_reported_seconds: d.max_reported_usage.seconds,
            max_reported_octets: d.max_reported_usage.octets,
            max_reported_units: d.max_reported_usage.units,
        }
    }
}

impl Config {
    /// Reads and checks a file; errors name the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1
                })
                .unwrap_or(0);
            // The line itself, so the message names the key even when TOML's does not
            // ("unknown variant `x`").
            match text.lines().nth(line.wrapping_sub(1)).map(str::trim) {
                Some(source) if !source.is_empty() => {
                    anyhow::anyhow!("{}:{line}: {} (in `{source}`)", path.display(), e.message())
                }
                _ => anyhow::anyhow!("{}:{line}: {}", path.display(), e.message()),
            }
        })?;
        cfg.check().with_context(|| path.display().to_string())?;
        Ok(cfg)
    }

    /// Cross-field checks the types cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        let d = &self.diameter;
        if d.origin_host.is_empty() || d.origin_realm.is_empty() {
            bail!("diameter.origin_host and diameter.origin_realm must not be empty");
        }
        if d.tls_listen.is_some() && (d.tls_cert.is_none() || d.tls_key.is_none()) {
            bail!("diameter.tls_listen needs diameter.tls_cert and diameter.tls_key");
        }
        if let Some(p) = &d.wireshark_dictionary {
            if !p.is_file() {
                bail!(
                    "diameter.wireshark_dictionary = {:?} is not a file (Debian's wireshark-common installs {WIRESHARK_DICTIONARY})",
                    p.display().to_string()
                );
            }
        }
        if d.max_message_len < 20 {
            bail!("diameter.max_message_len must be at least 20 octets");
        }
        if self.credit_control.validity_time_s == 0 {
            bail!("credit_control.validity_time_s must be at least 1");
        }
        if self.credit_control.server_request_poll_ms == 0
            || self.credit_control.server_request_timeout_ms == 0
        {
            bail!(
                "credit_control.server_request_poll_ms and server_request_timeout_ms must be at least 1"
            );
        }
        if !matches!(self.credit_control.store_failure_result, 3004 | 5012) {
            bail!("credit_control.store_failure_result must be 3004 or 5012");
        }
        if self.ledger.batch_workers == 0
            || self.ledger.batch_workers > self.ledger.max_connections as usize
        {
            bail!(
                "ledger.batch_workers must be between 1 and ledger.max_connections ({})",
                self.ledger.max_connections
            );
        }
        self.credit_control.ccfh()?;
        self.credit_control.ddfh()?;
        Ok(())
    }

    pub fn database_url(&self) -> String {
        match &self.ledger.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!(
                "sqlite://{}",
                self.ledger.data_dir.join("ledger.sqlite3").display()
            ),
        }
    }
}

/// Where Debian's `wireshark-common` installs Wireshark's Diameter dictionary.
pub const WIRESHARK_DICTIONARY: &str = "/usr/share/wireshark/diameter/dictionary.xml";

/// The dictionary: the embedded files, then `files`, then what the Wireshark dictionary at
/// `wireshark` defines that those do not. `wireshark_setting` (the config key or flag) leads
/// an error in Wireshark's files, which names the file and line.
pub fn load_dictionary(
    files: &[PathBuf],
    wireshark: Option<&Path>,
    wireshark_setting: &str,
) -> anyhow::Result<Dictionary> {
    let Some(path) = wireshark else {
        return Ok(if files.is_empty() {
            Dictionary::builtin().clone()
        } else {
            Dictionary::with_files(files)?
        });
    };
    let ws = WiresharkDictionary::read(path).map_err(|e| anyhow!("{wireshark_setting}: {e}"))?;
    Ok(Dictionary::with_wireshark(files, &ws)?)
}

impl CreditControlConfig {
    pub fn ccfh(&self) -> anyhow::Result<Option<i32>> {
        Ok(match self.credit_control_failure_handling.as_deref() {
            None => None,
            Some("terminate") => Some(0),
            Some("continue") => Some(1),
            Some("retry_and_terminate") => Some(2),
            Some(other) => bail!(
                "credit_control.credit_control_failure_handling = {other:?}: use terminate, continue or retry_and_terminate"
            ),
        })
    }

    pub fn ddfh(&self) -> anyhow::Result<Option<i32>> {
        Ok(match self.direct_debiting_failure_handling.as_deref() {
            None => None,
            Some("terminate_or_buffer") => Some(0),
            Some("continue") => Some(1),
            Some(other) => bail!(
                "credit_control.direct_debiting_failure_handling = {other:?}: use terminate_or_buffer or continue"
            ),
        })
    }
}
