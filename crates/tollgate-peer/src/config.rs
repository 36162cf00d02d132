//! What a peer says about itself in CER/CEA (RFC 6733 §5.3) and the limits it enforces.

use std::net::IpAddr;
use std::time::Duration;
use tollgate_codec::{Limits, UnknownAvps};

/// Local identity and capabilities.
#[derive(Clone, Debug)]
pub struct LocalPeer {
    pub origin_host: String,
    pub origin_realm: String,
    /// Host-IP-Address values (§5.3.5); at least one is sent.
    pub host_ip_addresses: Vec<IpAddr>,
    pub vendor_id: u32,
    pub product_name: String,
    pub firmware_revision: u32,
    /// Origin-State-Id (§8.16): grows on every restart that loses session state.
    pub origin_state_id: u32,
    /// Supported-Vendor-Id values; 10415 for the 3GPP AVPs of Ro.
    pub supported_vendor_ids: Vec<u32>,
    /// When set, only these Origin-Hosts may connect (others get 3010 UNKNOWN_PEER).
    pub allowed_peers: Option<Vec<String>>,
    /// What requests from each peer get for unknown M-bit vendor AVPs.
    pub unknown_avps: UnknownAvpPolicy,
}

/// RFC 6733 §4.1 for unknown M-bit AVPs, globally and per peer: refuse (5001) unless the
/// operator accepted unknown vendor AVPs inside open Grouped AVPs
/// ([`UnknownAvps::AcceptVendorInOpenGroups`]) for everyone or for named peers.
#[derive(Clone, Debug, Default)]
pub struct UnknownAvpPolicy {
    /// The rule for every peer.
    pub default: UnknownAvps,
    /// Origin-Hosts that get [`UnknownAvps::AcceptVendorInOpenGroups`] whatever the default.
    pub accept_from: Vec<String>,
}

impl UnknownAvpPolicy {
    /// The rule for requests from `origin_host`.
    pub fn for_peer(&self, origin_host: &str) -> UnknownAvps {
        if self
            .accept_from
            .iter()
            .any(|p| p.eq_ignore_ascii_case(origin_host))
        {
            UnknownAvps::AcceptVendorInOpenGroups
        } else {
            self.default
        }
    }
}

impl LocalPeer {
    pub fn new(origin_host: &str, origin_realm: &str) -> Self {
        LocalPeer {
            origin_host: origin_host.to_string(),
            origin_realm: origin_realm.to_string(),
            host_ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            vendor_id: 0,
            product_name: "Tollgate".to_string(),
            firmware_revision: firmware_revision(),
            origin_state_id: 1,
            supported_vendor_ids: vec![10415],
            allowed_peers: None,
            unknown_avps: UnknownAvpPolicy::default(),
        }
    }
}

/// The package version as a number: 0.1.0 → 100 (Firmware-Revision is an Unsigned32).
fn firmware_revision() -> u32 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    a * 10_000 + b * 100 + c
}

/// Every bound the peer layer enforces (docs/architecture.md, "Limits and defaults"), each a config field upstream.
#[derive(Clone, Debug)]
pub struct PeerLimits {
    /// Open connections at once; more are closed on accept.
    pub max_connections: usize,
    /// Requests a peer may have in the application at once; more are answered 3004.
    pub max_in_flight_per_peer: usize,
    /// Codec limits: message size, AVP count, grouped depth.
    pub codec: Limits,
    /// How long a new connection may stay silent before its CER (§5.6 R-Conn-CER).
    pub cer_timeout: Duration,
    /// How long we wait for a CEA after sending CER.
    pub cea_timeout: Duration,
    /// How long we wait for a DPA, or for the peer to close after our DPA.
    pub dpa_timeout: Duration,
    /// Watchdog interval Tw (RFC 3539 §3.4.1; at least 6 s).
    pub tw: Duration,
    /// Reconnect interval Tc for outbound peers (§2.1).
    pub tc: Duration,
    /// Answers remembered for duplicate detection (§6.1.4).
    pub dedup_capacity: usize,
    /// How long an answer is remembered (End-to-End ids are unique for at least 4 minutes).
    pub dedup_ttl: Duration,
    /// Outgoing frames buffered per connection.
    pub send_queue: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_connections: 1024,
            max_in_flight_per_peer: 4096,
            codec: Limits::default(),
            cer_timeout: Duration::from_secs(10),
            cea_timeout: Duration::from_secs(10),
            dpa_timeout: Duration::from_secs(5),
            tw: Duration::from_secs(30),
            tc: Duration::from_secs(30),
            dedup_capacity: 65_536,
            dedup_ttl: Duration::from_secs(300),
            send_queue: 8192,
        }
    }
}
