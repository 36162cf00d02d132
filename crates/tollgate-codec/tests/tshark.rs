//! Wireshark agrees with our encoder: encoded CER, CEA, CCR-I/U/T/E and CCA messages are
//! written to a pcap (one TCP stream to port 3868) and dissected by `tshark`; no frame may be
//! malformed and no Diameter expert error may appear, and the AVP names we meant must show.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

use tollgate_codec::codes::*;
use tollgate_codec::{Address, ApplicationId, Avp, CommandCode, Message, Time};
use tollgate_testkit::tshark::{self, Sender};

fn ccr(kind: i32, number: u32) -> Message {
    let mut m = Message::request(
        CommandCode::CREDIT_CONTROL,
        ApplicationId::CREDIT_CONTROL,
        true,
    )
    .with(Avp::from_str(SESSION_ID, "im.example.org;1;42"))
    .with(Avp::from_str(ORIGIN_HOST, "im.example.org"))
    .with(Avp::from_str(ORIGIN_REALM, "example.org"))
    .with(Avp::from_str(DESTINATION_REALM, "ocs.example.org"))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_str(SERVICE_CONTEXT_ID, "32260@3gpp.org"))
    .with(Avp::from_enum(CC_REQUEST_TYPE, kind))
    .with(Avp::from_u32(CC_REQUEST_NUMBER, number))
    .with(Avp::from_time(
        EVENT_TIMESTAMP,
        Time::from_unix(1_795_000_000),
    ))
    .with(Avp::grouped(
        SUBSCRIPTION_ID,
        &[
            Avp::from_enum(SUBSCRIPTION_ID_TYPE, 2),
            Avp::from_str(SUBSCRIPTION_ID_DATA, "sip:alice@example.org"),
        ],
    ));
    if kind == 4 {
        m.push(Avp::from_enum(REQUESTED_ACTION, 0));
    }
    m.push(Avp::from_enum(MULTIPLE_SERVICES_INDICATOR, 1));
    let mut mscc = vec![Avp::from_u32(RATING_GROUP, 10)];
    if kind != 3 {
        mscc.push(Avp::grouped(
            REQUESTED_SERVICE_UNIT,
            &[Avp::from_u32(CC_TIME, 60)],
        ));
    }
    if kind == 2 || kind == 3 {
        mscc.push(Avp::grouped(
            USED_SERVICE_UNIT,
            &[Avp::from_u32(CC_TIME, 42)],
        ));
        mscc.push(Avp::from_enum(
            REPORTING_REASON,
            if kind == 3 { 2 } else { 0 },
        ));
    }
    m.push(Avp::grouped(MULTIPLE_SERVICES_CREDIT_CONTROL, &mscc));
    m.push(Avp::grouped(
        SERVICE_INFORMATION,
        &[
            Avp::grouped(
                IMS_INFORMATION,
                &[
                    Avp::grouped(EVENT_TYPE, &[Avp::from_str(SIP_METHOD, "INVITE")]),
                    Avp::from_enum(ROLE_OF_NODE, 0),
                    Avp::from_enum(NODE_FUNCTIONALITY, 6),
                ],
            ),
            Avp::grouped(
                SERVICE_GENERIC_INFORMATION,
                &[Avp::from_enum(APPLICATION_SERVICE_TYPE, 103)],
            ),
            Avp::grouped(
                IM_INFORMATION,
                &[Avp::from_u32(TOTAL_NUMBER_OF_MESSAGES_SENT, 3)],
            ),
        ],
    ));
    m
}

fn messages() -> Vec<Message> {
    let cer = Message::request(
        CommandCode::CAPABILITIES_EXCHANGE,
        ApplicationId::COMMON,
        false,
    )
    .with(Avp::from_str(ORIGIN_HOST, "im.example.org"))
    .with(Avp::from_str(ORIGIN_REALM, "example.org"))
    .with(Avp::from_address(
        HOST_IP_ADDRESS,
        &Address::V4([127, 0, 0, 1].into()),
    ))
    .with(Avp::from_u32(VENDOR_ID, 0))
    .with(Avp::from_str(PRODUCT_NAME, "Tollgate"))
    .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
    .with(Avp::from_u32(SUPPORTED_VENDOR_ID, 10415));
    let mut cea = Message::answer_to(&cer)
        .with(Avp::from_u32(RESULT_CODE, 2001))
        .with(Avp::from_str(ORIGIN_HOST, "tollgate.localdomain"))
        .with(Avp::from_str(ORIGIN_REALM, "localdomain"))
        .with(Avp::from_address(
            HOST_IP_ADDRESS,
            &Address::V6("::1".parse().unwrap()),
        ))
        .with(Avp::from_u32(VENDOR_ID, 0))
        .with(Avp::from_str(PRODUCT_NAME, "Tollgate"))
        .with(Avp::from_u32(FIRMWARE_REVISION, 1));
    cea.push(Avp::from_u32(AUTH_APPLICATION_ID, 4));
    let ccr_i = ccr(1, 0);
    let cca = Message::answer_to(&ccr_i)
        .with(Avp::from_u32(RESULT_CODE, 2001))
        .with(Avp::from_str(ORIGIN_HOST, "tollgate.localdomain"))
        .with(Avp::from_str(ORIGIN_REALM, "localdomain"))
        .with(Avp::from_u32(AUTH_APPLICATION_ID, 4))
        .with(Avp::from_enum(CC_REQUEST_TYPE, 1))
        .with(Avp::from_u32(CC_REQUEST_NUMBER, 0))
        .with(Avp::grouped(
            MULTIPLE_SERVICES_CREDIT_CONTROL,
            &[
                Avp::grouped(GRANTED_SERVICE_UNIT, &[Avp::from_u32(CC_TIME, 60)]),
                Avp::from_u32(RATING_GROUP, 10),
                Avp::from_u32(VALIDITY_TIME, 300),
                Avp::from_u32(RESULT_CODE, 2001),
                Avp::grouped(
                    FINAL_UNIT_INDICATION,
                    &[Avp::from_enum(FINAL_UNIT_ACTION, 0)],
                ),
            ],
        ))
        .with(Avp::grouped(
            COST_INFORMATION,
            &[
                Avp::grouped(
                    UNIT_VALUE,
                    &[
                        Avp::from_i64(VALUE_DIGITS, 150),
                        Avp::from_i32(EXPONENT, -2),
                    ],
                ),
                Avp::from_u32(CURRENCY_CODE, 978),
            ],
        ));
    vec![cer, cea, ccr_i, cca, ccr(2, 1), ccr(3, 2), ccr(4, 0)]
}

#[test]
fn tshark_decodes_our_messages_cleanly() {
    let msgs = messages();
    let payloads: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_bytes().to_vec()).collect();
    let path = std::env::temp_dir().join(format!("tollgate-tshark-{}.pcap", std::process::id()));
    let text = tshark::dissects_cleanly(&payloads, Sender::Client, &path);
    std::fs::remove_file(&path).ok();
    let Some(text) = text else {
        return;
    };
    for name in [
        "Capabilities-Exchange",
        "Credit-Control",
        "Session-Id",
        "Subscription-Id-Data",
        "Multiple-Services-Credit-Control",
        "Requested-Service-Unit",
        "Used-Service-Unit",
        "Granted-Service-Unit",
        "Service-Information",
        "IMS-Information",
        "Role-Of-Node",
        "Service-Generic-Information",
        "IM-Information",
        "Cost-Information",
        "Final-Unit-Indication",
        "Requested-Action",
    ] {
        assert!(text.contains(name), "tshark does not show {name}:\n{text}");
    }
}
