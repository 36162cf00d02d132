//! Client deviations: what a deployed client sends that an RFC does not allow, but that
//! Tollgate accepts because real clients decide where the letter leaves room (see
//! docs/real-clients.md). Each is said once in the log at `info` (then at `debug`, so a busy
//! client does not flood the log) and counted on /metrics as
//! `tollgate_client_deviations_total{deviation="…"}`.

use std::sync::atomic::{AtomicBool, Ordering};

/// A departure from an RFC that Tollgate tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deviation {
    /// A CCR whose Auth-Application-Id is only inside Vendor-Specific-Application-Id
    /// (RFC 4006 §3.1 wants it at the top level): Kamailio's ims_charging.
    AuthApplicationIdInVendorSpecific,
    /// An unknown vendor AVP with the M bit inside a Grouped AVP, let through because the
    /// operator chose `diameter.unknown_vendor_avps = "accept"` (RFC 6733 §4.1 wants 5001).
    UnknownVendorAvpAccepted,
}

impl Deviation {
    const ALL: [Deviation; 2] = [
        Deviation::AuthApplicationIdInVendorSpecific,
        Deviation::UnknownVendorAvpAccepted,
    ];

    /// The `deviation` label on /metrics.
    pub fn label(self) -> &'static str {
        match self {
            Deviation::AuthApplicationIdInVendorSpecific => "auth_application_id_in_vsai",
            Deviation::UnknownVendorAvpAccepted => "unknown_vendor_avp_accepted",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Deviation::AuthApplicationIdInVendorSpecific => {
                "CCR has Auth-Application-Id only inside Vendor-Specific-Application-Id (RFC 4006 §3.1 wants it at the top level); accepted"
            }
            Deviation::UnknownVendorAvpAccepted => {
                "unknown vendor AVP with the M bit inside a Grouped AVP (RFC 6733 §4.1: 5001); accepted by diameter.unknown_vendor_avps"
            }
        }
    }

    fn logged(self) -> &'static AtomicBool {
        static LOGGED: [AtomicBool; Deviation::ALL.len()] =
            [AtomicBool::new(false), AtomicBool::new(false)];
        &LOGGED[self as usize]
    }
}

/// Logs and counts one message that shows `deviation`; `peer` is its Origin-Host and `detail`
/// says what exactly (e.g. which AVP).
pub fn report(deviation: Deviation, peer: &str, detail: &str) {
    metrics::counter!("tollgate_client_deviations_total", "deviation" => deviation.label())
        .increment(1);
    if deviation.logged().swap(true, Ordering::Relaxed) {
        tracing::debug!(peer, detail, "{}", deviation.rule());
    } else {
        tracing::info!(
            peer,
            detail,
            "{} (said once; later ones at debug level, all counted in tollgate_client_deviations_total)",
            deviation.rule()
        );
    }
}
