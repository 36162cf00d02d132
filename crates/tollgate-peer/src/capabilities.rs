//! Capabilities exchange (RFC 6733 §5.3): building CER/CEA and deciding what two peers share.

use crate::config::LocalPeer;
use tollgate_codec::codes::*;
use tollgate_codec::{
    Address, ApplicationId, Avp, CommandCode, Message, ProtocolError, ResultCode,
};

/// What the other side said about itself in its CER or CEA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCapabilities {
    pub origin_host: String,
    pub origin_realm: String,
    /// Every application id listed: Auth-, Acct- and inside Vendor-Specific-Application-Id.
    pub applications: Vec<ApplicationId>,
    pub origin_state_id: Option<u32>,
    pub product_name: Option<String>,
}

impl PeerCapabilities {
    /// Reads a CER or CEA that the dictionary has validated.
    pub fn from_message(m: &Message) -> Result<Self, ProtocolError> {
        let text = |code| -> Result<String, ProtocolError> {
            m.find(code)
                .map(|a| a.utf8().map(str::to_string))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let mut applications = Vec::new();
        for a in &m.avps {
            if a.is(AUTH_APPLICATION_ID) || a.is(ACCT_APPLICATION_ID) {
                applications.push(ApplicationId(a.u32()?));
            } else if a.is(VENDOR_SPECIFIC_APPLICATION_ID) {
                for member in a.members()? {
                    if member.is(AUTH_APPLICATION_ID) || member.is(ACCT_APPLICATION_ID) {
                        applications.push(ApplicationId(member.u32()?));
                    }
                }
            }
        }
        Ok(PeerCapabilities {
            origin_host: text(ORIGIN_HOST)?,
            origin_realm: text(ORIGIN_REALM)?,
            applications,
            origin_state_id: m.find(ORIGIN_STATE_ID).and_then(|a| a.u32().ok()),
            product_name: m
                .find(PRODUCT_NAME)
                .and_then(|a| a.utf8().ok().map(str::to_string)),
        })
    }

    /// Applications both sides serve (§5.3: the intersection; a Relay peer matches all).
    pub fn common_with(&self, local: &[ApplicationId]) -> Vec<ApplicationId> {
        if self.applications.contains(&ApplicationId::RELAY) {
            return local.to_vec();
        }
        local
            .iter()
            .copied()
            .filter(|a| self.applications.contains(a))
            .collect()
    }
}

fn identity_avps(local: &LocalPeer, apps: &[ApplicationId], m: &mut Message) {
    m.push(Avp::from_str(ORIGIN_HOST, &local.origin_host));
    m.push(Avp::from_str(ORIGIN_REALM, &local.origin_realm));
    for ip in &local.host_ip_addresses {
        m.push(Avp::from_address(HOST_IP_ADDRESS, &Address::from(*ip)));
    }
    m.push(Avp::from_u32(VENDOR_ID, local.vendor_id));
    m.push(Avp::from_str(PRODUCT_NAME, &local.product_name));
    m.push(Avp::from_u32(ORIGIN_STATE_ID, local.origin_state_id));
    for v in &local.supported_vendor_ids {
        m.push(Avp::from_u32(SUPPORTED_VENDOR_ID, *v));
    }
    for a in apps {
        m.push(Avp::from_u32(AUTH_APPLICATION_ID, a.0));
    }
    // Ro is credit control (4) with 3GPP AVPs; some 3GPP peers look for it inside
    // Vendor-Specific-Application-Id with vendor 10415, so say it both ways.
    if apps.contains(&ApplicationId::CREDIT_CONTROL) {
        m.push(Avp::grouped(
            VENDOR_SPECIFIC_APPLICATION_ID,
            &[
                Avp::from_u32(VENDOR_ID, 10415),
                Avp::from_u32(AUTH_APPLICATION_ID, ApplicationId::CREDIT_CONTROL.0),
            ],
        ));
    }
    m.push(Avp::from_u32(FIRMWARE_REVISION, local.firmware_revision));
}

/// A CER advertising `apps`.
pub fn cer(local: &LocalPeer, apps: &[ApplicationId]) -> Message {
    let mut m = Message::request(
        CommandCode::CAPABILITIES_EXCHANGE,
        ApplicationId::COMMON,
        false,
    );
    identity_avps(local, apps, &mut m);
    m
}

/// A CEA answering `request` with `result`.
pub fn cea(
    local: &LocalPeer,
    apps: &[ApplicationId],
    request: &Message,
    result: ResultCode,
    error: Option<&str>,
) -> Message {
    let mut m = Message::answer_to(request);
    if result.is_protocol_error() {
        m.header.flags = m.header.flags.with(tollgate_codec::Flags::ERROR, true);
    }
    m.push(Avp::from_u32(RESULT_CODE, result.0));
    identity_avps(local, apps, &mut m);
    if let Some(e) = error {
        m.push(Avp::from_str(ERROR_MESSAGE, e));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_matches_everything_and_intersection_otherwise() {
        let local = [ApplicationId::CREDIT_CONTROL];
        let mut caps = PeerCapabilities {
            origin_host: "a".into(),
            origin_realm: "r".into(),
            applications: vec![ApplicationId(16777238)],
            origin_state_id: None,
            product_name: None,
        };
        assert!(caps.common_with(&local).is_empty());
        caps.applications.push(ApplicationId::RELAY);
        assert_eq!(caps.common_with(&local), local.to_vec());
        caps.applications = vec![ApplicationId::CREDIT_CONTROL];
        assert_eq!(caps.common_with(&local), local.to_vec());
    }

    #[test]
    fn our_cer_validates_and_reads_back() {
        let local = LocalPeer::new("tollgate.localdomain", "localdomain");
        let m = cer(&local, &[ApplicationId::CREDIT_CONTROL]);
        let m = Message::decode(&m.to_bytes()).unwrap();
        tollgate_codec::Dictionary::builtin()
            .validate(&m, &Default::default())
            .unwrap();
        let caps = PeerCapabilities::from_message(&m).unwrap();
        assert_eq!(caps.origin_host, "tollgate.localdomain");
        assert!(caps.applications.contains(&ApplicationId::CREDIT_CONTROL));
    }
}
