#!/usr/bin/env python3
"""Open5GS's SMF on Gy, replayed by python-diameter for Tollgate's end-to-end tests.

The CCR-I, CCR-U and CCR-T below carry the AVPs Open5GS's SMF puts in them, in its order
and with its AVP flags. The shape comes from Open5GS `src/smf/gy-path.c` (smf_gy_send_ccr,
fill_multiple_services_credit_control_ccr, fill_ps_information; Service-Context-Id
32251@3gpp.org since Open5GS pull request 2224), `src/smf/fd-path.c`
(smf_fd_msg_avp_add_3gpp_uli) and `src/smf/pfcp-path.c` (the PFCP usage-report trigger that
becomes Reporting-Reason). The SMF builds its AVPs with freeDiameter, which sets the M and V
flags from the dictionaries the SMF loads (dict_nasreq, dict_dcca, dict_dcca_3gpp); the
flags here follow those dictionaries, not python-diameter's defaults. Everything is encoded
and decoded by python-diameter (PyPI `python-diameter`, import name `diameter`), so what
Tollgate sees was not produced by its own codec.

What such a session looks like (4G attach through the SMF acting as PGW-C, GTPv2 on S5):
  CCR-I  MSCC{RSU{CC-Total-Octets 1000000}, QoS-Information}, no Rating-Group
  CCR-U  MSCC{RSU{CC-Total-Octets 1000000}, USU{Reporting-Reason QUOTA_EXHAUSTED, CC-Time,
         CC-Input-Octets, CC-Output-Octets}, QoS-Information}  (the UPF's volume quota ran out)
  CCR-T  MSCC{USU{CC-Time, CC-Input-Octets, CC-Output-Octets}, Reporting-Reason FINAL,
         QoS-Information}, Termination-Cause DIAMETER_LOGOUT
each with Service-Information{PS-Information{3GPP-* of TS 29.061, addresses, UE info}}.
Open5GS sends no CC-Total-Octets in Used-Service-Unit: usage is input + output octets.

Usage: gy_open5gs.py HOST:PORT CCA_HEX_FILE
       gy_open5gs.py --list-avps      (prints every AVP of the three CCRs, no network)

Over one connection: CER/CEA, CCR-I, CCR-U, CCR-T, DPR/DPA. Prints one JSON object per
answer on stdout ({"step": ..., "result_code": N, "mscc": [...], ...}) and a summary line,
writes the raw bytes of every CCA as hex (one per line) to CCA_HEX_FILE, and exits 0 only
if every expectation held; otherwise it lists the failed expectations on stderr and exits 1
(2 on a transport or decoding failure, 64 on a usage error). After a refused CCR-I it stops,
as the SMF does (the PDU session is rejected): no CCR-U/T follow.
"""

import datetime
import os
import random
import struct
import sys
import time

# The shared client side lives next to this script; leave no __pycache__ there.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diameter_peer import (  # noqa: E402  (exits 3 without python-diameter)
    APP_CC,
    AUTH_APPLICATION_ID,
    CC_REQUEST_NUMBER,
    CC_REQUEST_TYPE,
    CMD_CCR,
    FLAG_P,
    FLAG_R,
    ORIGIN_HOST_AVP,
    ORIGIN_REALM_AVP,
    RESULT_CODE,
    SESSION_ID,
    AvpGrouped,
    Client,
    expect,
    first,
    new_avp,
    request,
    run,
    value_of,
)

# --- the SMF and its subscriber -------------------------------------------------------------
# Identity and realm come from the SMF's freeDiameter configuration; Open5GS sends its own
# realm as Destination-Realm (fd_g_config->cnf_diamrlm), so the SMF is configured in the
# OCS's realm, as deployments do.
ORIGIN_HOST = "smf.test"
ORIGIN_REALM = "test"
SERVICE_CONTEXT = "32251@3gpp.org"  # TS 32.299 §7.1.12: PS charging (TS 32.251)
IMSI = "001011234567895"
MSISDN = "15550000042"
APN = "internet"
UE_IPV4 = "10.45.0.2"  # Open5GS's default UE pool 10.45.0.0/16
SGW_S5C_IPV4 = "127.0.0.3"  # SGSN-Address: the SGW-C's S5 GTP-C address
SMF_GTPC_IPV4 = "127.0.0.4"  # GGSN-Address: the SMF's own GTP-C address
CHARGING_ID = 1
EBI = 5  # default bearer; GTPv2 sessions put the EPS Bearer ID in 3GPP-NSAPI (TS 29.274 §8.8)
IMEISV = "3534900698733190"  # 16 digits, sent as text by Open5GS
QCI, ARP_PRIORITY_LEVEL = 9, 8
PRE_EMPTION_DISABLED = 1  # Pre-emption-Capability/-Vulnerability, TS 29.212 §5.3.46-47
APN_AMBR_UL = APN_AMBR_DL = 1_000_000_000  # bit/s

# The units of the session. Open5GS requests a fixed 1 000 000 octets in every RSU; the UPF
# reports the first quota used up in full, then a last partial report at release.
REQUESTED_OCTETS = 1_000_000
UPDATE_USAGE = {"cc_time": 34, "cc_input_octets": 400_000, "cc_output_octets": 600_000}
FINAL_USAGE = {"cc_time": 12, "cc_input_octets": 50_000, "cc_output_octets": 180_000}

APP_GX = 16777238
VENDOR_3GPP = 10415

INITIAL, UPDATE, TERMINATION = 1, 2, 3
END_USER_E164, END_USER_IMSI = 0, 1
DIRECT_DEBITING = 0
AOC_FULL = 1
MULTIPLE_SERVICES_NOT_SUPPORTED = 0
REPORTING_REASON_FINAL, REPORTING_REASON_QUOTA_EXHAUSTED = 2, 3
DIAMETER_LOGOUT = 1
PDP_TYPE_IPV4 = 0
RAT_TYPE_EUTRAN = 6  # GTPv2 RAT Type, TS 29.274 §8.17
ULI_TAI_AND_ECGI = 130  # 3GPP-User-Location-Info type, TS 29.061 §16.4.7.2
UE_INFO_IMEISV = 0

# AVP codes (RFC 6733, RFC 4006, RFC 7155, TS 29.061, TS 29.212, TS 32.299), besides those
# diameter_peer.py names.
DESTINATION_REALM, DESTINATION_HOST = 283, 293
VENDOR_SPECIFIC_APPLICATION_ID, VENDOR_ID = 260, 266
HOST_IP_ADDRESS, PRODUCT_NAME, FIRMWARE_REVISION = 257, 269, 267
ORIGIN_STATE_ID, SUPPORTED_VENDOR_ID = 278, 265
FAILED_AVP, ERROR_MESSAGE, SERVICE_CONTEXT_ID = 279, 281, 461
EVENT_TIMESTAMP, TERMINATION_CAUSE, REQUESTED_ACTION = 55, 295, 436
SUBSCRIPTION_ID, SUBSCRIPTION_ID_TYPE, SUBSCRIPTION_ID_DATA = 443, 450, 444
MULTIPLE_SERVICES_INDICATOR, MSCC = 455, 456
REQUESTED_SERVICE_UNIT, USED_SERVICE_UNIT, GRANTED_SERVICE_UNIT = 437, 446, 431
CC_TIME, CC_TOTAL_OCTETS, CC_INPUT_OCTETS, CC_OUTPUT_OCTETS = 420, 421, 412, 414
CC_SERVICE_SPECIFIC_UNITS, RATING_GROUP, VALIDITY_TIME = 417, 432, 448
USER_EQUIPMENT_INFO, USER_EQUIPMENT_INFO_TYPE, USER_EQUIPMENT_INFO_VALUE = 458, 459, 460
CALLED_STATION_ID = 30
AOC_REQUEST_TYPE, REPORTING_REASON = 2055, 872
SERVICE_INFORMATION, PS_INFORMATION = 873, 874
PDP_ADDRESS, SGSN_ADDRESS, GGSN_ADDRESS = 1227, 1228, 847
QOS_INFORMATION, QOS_CLASS_IDENTIFIER = 1016, 1028
ALLOCATION_RETENTION_PRIORITY, PRIORITY_LEVEL = 1034, 1046
PRE_EMPTION_CAPABILITY, PRE_EMPTION_VULNERABILITY = 1047, 1048
APN_AGGREGATE_MAX_BITRATE_UL, APN_AGGREGATE_MAX_BITRATE_DL = 1041, 1040
TGPP_CHARGING_ID, TGPP_PDP_TYPE, TGPP_NSAPI = 2, 3, 10
TGPP_SELECTION_MODE, TGPP_CHARGING_CHARACTERISTICS, TGPP_SGSN_MCC_MNC = 12, 13, 18
TGPP_RAT_TYPE, TGPP_USER_LOCATION_INFO, TGPP_MS_TIMEZONE = 21, 22, 23

# The M bit as the SMF's freeDiameter dictionaries set it. Every base, RFC 4006 and RFC 7155
# AVP used here is "M must"; of the 3GPP AVPs, TS 29.212 makes Allocation-Retention-Priority,
# its members and the APN-AMBR pair "M must not"; everything else from TS 29.061 and
# TS 32.299 is M (dict_dcca_3gpp.csv). CER/DPR AVPs follow RFC 6733 §4.5 (Product-Name and
# Firmware-Revision M must not).
NOT_MANDATORY = {
    (ALLOCATION_RETENTION_PRIORITY, VENDOR_3GPP),
    (PRIORITY_LEVEL, VENDOR_3GPP),
    (PRE_EMPTION_CAPABILITY, VENDOR_3GPP),
    (PRE_EMPTION_VULNERABILITY, VENDOR_3GPP),
    (APN_AGGREGATE_MAX_BITRATE_UL, VENDOR_3GPP),
    (APN_AGGREGATE_MAX_BITRATE_DL, VENDOR_3GPP),
    (PRODUCT_NAME, 0),
    (FIRMWARE_REVISION, 0),
}


def avp(code, value, vendor=0):
    """One AVP with the SMF's M bit; python-diameter sets V from the vendor id."""
    return new_avp(code, value, vendor, (code, vendor) not in NOT_MANDATORY)


def tgpp(code, value):
    return avp(code, value, VENDOR_3GPP)


def grouped(code, members, vendor=0):
    return avp(code, list(members), vendor)


def plmn_bcd(mcc, mnc):
    """A PLMN identity in the 3-octet BCD form of TS 24.008 §10.5.1.3 (2-digit MNC)."""
    d = [int(c) for c in mcc + mnc]
    return bytes([d[1] << 4 | d[0], 0xF0 | d[2], d[4] << 4 | d[3]])


def user_location_info():
    """TAI and ECGI as the SMF re-encodes GTPv2's ULI IE for Gy (TS 29.061 §16.4.7.2 type
    130): PLMN + TAC, then PLMN + 28-bit E-UTRAN cell identity."""
    plmn = plmn_bcd("001", "01")
    return bytes([ULI_TAI_AND_ECGI]) + plmn + struct.pack(">H", 1) + plmn + struct.pack(">I", 0x0019B01)


class Smf:
    """The SMF's side of one Gy session."""

    def __init__(self, ids):
        self.ids = ids
        self.origin_state = int(time.time()) & 0xFFFFFFFF
        # freeDiameter's Session-Id: "<identity>;<high 32 bits>;<low 32 bits>;<option>", the
        # option being "app_gy" in gy-path.c.
        self.session_id = f"{ORIGIN_HOST};{self.origin_state};{random.getrandbits(24)};app_gy"
        # Destination-Host: the Origin-Host of the last CCA (smf_gy_cca_cb keeps peer_host).
        self.peer_host = None

    def ccr(self, kind, number):
        """One CCR in smf_gy_send_ccr's order."""
        avps = [
            avp(SESSION_ID, self.session_id),
            avp(ORIGIN_HOST_AVP, ORIGIN_HOST.encode()),
            avp(ORIGIN_REALM_AVP, ORIGIN_REALM.encode()),
            avp(DESTINATION_REALM, ORIGIN_REALM.encode()),
            avp(AUTH_APPLICATION_ID, APP_CC),
            avp(SERVICE_CONTEXT_ID, SERVICE_CONTEXT),
            avp(CC_REQUEST_TYPE, kind),
            avp(CC_REQUEST_NUMBER, number),
        ]
        if self.peer_host is not None:
            avps.append(avp(DESTINATION_HOST, self.peer_host))
        # No User-Name, no Origin-State-Id: both are "#if 0" in gy-path.c.
        avps.append(avp(EVENT_TIMESTAMP, datetime.datetime.now(datetime.timezone.utc)))
        avps.append(grouped(SUBSCRIPTION_ID, [avp(SUBSCRIPTION_ID_TYPE, END_USER_IMSI), avp(SUBSCRIPTION_ID_DATA, IMSI)]))
        avps.append(grouped(SUBSCRIPTION_ID, [avp(SUBSCRIPTION_ID_TYPE, END_USER_E164), avp(SUBSCRIPTION_ID_DATA, MSISDN)]))
        if kind == TERMINATION:
            avps.append(avp(TERMINATION_CAUSE, DIAMETER_LOGOUT))
        # Sent in session requests too, although RFC 4006 §8.41 defines it for events.
        avps.append(avp(REQUESTED_ACTION, DIRECT_DEBITING))
        avps.append(tgpp(AOC_REQUEST_TYPE, AOC_FULL))
        if kind == INITIAL:
            avps.append(avp(MULTIPLE_SERVICES_INDICATOR, MULTIPLE_SERVICES_NOT_SUPPORTED))
        avps.append(self.mscc(kind))
        avps.append(tgpp(SERVICE_INFORMATION, [tgpp(PS_INFORMATION, self.ps_information(kind))]))
        return request(CMD_CCR, APP_CC, FLAG_R | FLAG_P, avps, self.ids)

    @staticmethod
    def mscc(kind):
        """Multiple-Services-Credit-Control without Rating-Group or Service-Identifier."""
        members = []
        if kind in (INITIAL, UPDATE):
            members.append(grouped(REQUESTED_SERVICE_UNIT, [avp(CC_TOTAL_OCTETS, REQUESTED_OCTETS)]))
        if kind in (UPDATE, TERMINATION):
            usage = UPDATE_USAGE if kind == UPDATE else FINAL_USAGE
            usu = []
            # TS 32.299 §7.2.175: THRESHOLD, QUOTA_EXHAUSTED and OTHER_QUOTA_TYPE go inside
            # Used-Service-Unit, the others (FINAL, VALIDITY_TIME ...) in the MSCC.
            if kind == UPDATE:
                usu.append(tgpp(REPORTING_REASON, REPORTING_REASON_QUOTA_EXHAUSTED))
            usu += [
                avp(CC_TIME, usage["cc_time"]),
                avp(CC_INPUT_OCTETS, usage["cc_input_octets"]),
                avp(CC_OUTPUT_OCTETS, usage["cc_output_octets"]),
            ]
            members.append(grouped(USED_SERVICE_UNIT, usu))
            if kind == TERMINATION:
                members.append(tgpp(REPORTING_REASON, REPORTING_REASON_FINAL))
        arp = [
            tgpp(PRIORITY_LEVEL, ARP_PRIORITY_LEVEL),
            tgpp(PRE_EMPTION_CAPABILITY, PRE_EMPTION_DISABLED),
            tgpp(PRE_EMPTION_VULNERABILITY, PRE_EMPTION_DISABLED),
        ]
        qos = [
            tgpp(QOS_CLASS_IDENTIFIER, QCI),
            tgpp(ALLOCATION_RETENTION_PRIORITY, arp),
            tgpp(APN_AGGREGATE_MAX_BITRATE_UL, APN_AMBR_UL),
            tgpp(APN_AGGREGATE_MAX_BITRATE_DL, APN_AMBR_DL),
        ]
        members.append(tgpp(QOS_INFORMATION, qos))
        return grouped(MSCC, members)

    @staticmethod
    def ps_information(kind):
        """fill_ps_information for an IPv4 GTPv2 session with an IMEISV and a ULI."""
        ps = [tgpp(TGPP_CHARGING_ID, struct.pack(">I", CHARGING_ID))]  # Unsigned32 on the wire
        if kind == INITIAL:
            ps.append(tgpp(TGPP_PDP_TYPE, PDP_TYPE_IPV4))
        ps += [
            tgpp(PDP_ADDRESS, UE_IPV4),
            tgpp(SGSN_ADDRESS, SGW_S5C_IPV4),
            tgpp(GGSN_ADDRESS, SMF_GTPC_IPV4),
            avp(CALLED_STATION_ID, APN),
            tgpp(TGPP_SELECTION_MODE, "0"),  # the GTP Selection Mode as one digit
            tgpp(TGPP_CHARGING_CHARACTERISTICS, "0800"),  # the GTP IE's two octets as hex
            tgpp(TGPP_SGSN_MCC_MNC, "00101"),
            tgpp(TGPP_NSAPI, bytes([EBI])),
            tgpp(TGPP_MS_TIMEZONE, bytes([0x40, 0x00])),  # GTPv2 UE Time Zone IE value
            tgpp(TGPP_USER_LOCATION_INFO, user_location_info()),
            tgpp(TGPP_RAT_TYPE, bytes([RAT_TYPE_EUTRAN])),
            grouped(
                USER_EQUIPMENT_INFO,
                [avp(USER_EQUIPMENT_INFO_TYPE, UE_INFO_IMEISV), avp(USER_EQUIPMENT_INFO_VALUE, IMEISV.encode())],
            ),
        ]
        return ps


class SmfClient(Client):
    """The SMF's Diameter connection to the OCS."""

    def __init__(self, addr, cca_file):
        super().__init__(addr, cca_file, ORIGIN_HOST, ORIGIN_REALM)
        self.smf = Smf(self.ids)

    def cer(self):
        # What the SMF's freeDiameter stack announces (fd_p_ce.c): Gy is Auth-Application-Id 4
        # (registered without a vendor), Gx a vendor-specific application.
        avps = [
            avp(ORIGIN_HOST_AVP, ORIGIN_HOST.encode()),
            avp(ORIGIN_REALM_AVP, ORIGIN_REALM.encode()),
            avp(HOST_IP_ADDRESS, self.conn.local_ip),
            avp(VENDOR_ID, 0),
            avp(PRODUCT_NAME, "freeDiameter"),
            avp(FIRMWARE_REVISION, 10500),
            avp(ORIGIN_STATE_ID, self.smf.origin_state),
            avp(SUPPORTED_VENDOR_ID, VENDOR_3GPP),
            avp(AUTH_APPLICATION_ID, APP_CC),
            grouped(VENDOR_SPECIFIC_APPLICATION_ID, [avp(VENDOR_ID, VENDOR_3GPP), avp(AUTH_APPLICATION_ID, APP_GX)]),
        ]
        self.exchange_capabilities(avps)

    def ask_cc(self, step, req):
        """Sends a CCR, records the CCA's bytes and checks what smf_gy_cca_cb reads: the
        echoes, Result-Code, Origin-Host/-Realm, CC-Request-Type/-Number, and per MSCC its
        Result-Code and Granted-Service-Unit."""
        ans = self.ask_recorded(req)
        avps = ans.avps
        msccs = [a for a in avps if a.code == MSCC and a.vendor_id == 0]
        info = {
            "session_id": value_of(avps, SESSION_ID),
            "cc_request_type": value_of(avps, CC_REQUEST_TYPE),
            "cc_request_number": value_of(avps, CC_REQUEST_NUMBER),
            "mscc": [describe_mscc(m) for m in msccs],
        }
        failed = first(avps, FAILED_AVP)
        if failed is not None:
            info["failed_avp"] = [describe_avp(a) for a in failed.value]
        message = value_of(avps, ERROR_MESSAGE)
        if message is not None:
            info["error_message"] = message
        line = self.report(step, ans, **info)
        self.expect_cca(step, req, ans, 2001)
        expect(step, "Origin-Host and Origin-Realm", value_of(avps, ORIGIN_HOST_AVP) and value_of(avps, ORIGIN_REALM_AVP))
        origin = value_of(avps, ORIGIN_HOST_AVP)
        if origin:
            self.smf.peer_host = origin
        return line

    def expect_grant(self, step, line):
        msccs = line.get("mscc", [])
        expect(step, f"one MSCC (got {len(msccs)})", len(msccs) == 1)
        if msccs:
            m = msccs[0]
            expect(step, f"MSCC Result-Code 2001 (got {m.get('result_code')})", m.get("result_code") == 2001)
            expect(step, f"no Rating-Group in the answer's MSCC (got {m.get('rating_group')})", "rating_group" not in m)
            g = m.get("granted", {})
            expect(
                step,
                f"GSU CC-Total-Octets {REQUESTED_OCTETS} (got {g})",
                g == {"cc_total_octets": REQUESTED_OCTETS},
            )

    def flows(self):
        completed = self.session()
        used = sum(u["cc_input_octets"] + u["cc_output_octets"] for u in (UPDATE_USAGE, FINAL_USAGE))
        return {"session_id": self.smf.session_id, "completed": completed, "used_octets": used if completed else 0}

    def session(self):
        line = self.ask_cc("ccr-i", self.smf.ccr(INITIAL, 0))
        self.expect_grant("ccr-i", line)
        if line["result_code"] != 2001:
            return False  # the SMF rejects the PDU session; no CCR-U/T follow
        line = self.ask_cc("ccr-u", self.smf.ccr(UPDATE, 1))
        self.expect_grant("ccr-u", line)
        line = self.ask_cc("ccr-t", self.smf.ccr(TERMINATION, 2))
        for m in line.get("mscc", []):
            expect("ccr-t", f"MSCC Result-Code 2001 (got {m.get('result_code')})", m.get("result_code") in (None, 2001))
        return True


def describe_avp(a):
    d = {"code": a.code}
    if a.vendor_id:
        d["vendor"] = a.vendor_id
    if isinstance(a, AvpGrouped) and a.value:
        d["members"] = [describe_avp(m) for m in a.value]
    return d


def describe_mscc(m):
    d = {}
    for a in m.value:
        if a.vendor_id != 0:
            continue
        if a.code == RATING_GROUP:
            d["rating_group"] = a.value
        elif a.code == RESULT_CODE:
            d["result_code"] = a.value
        elif a.code == VALIDITY_TIME:
            d["validity_time"] = a.value
        elif a.code == GRANTED_SERVICE_UNIT:
            names = {
                CC_TIME: "cc_time",
                CC_TOTAL_OCTETS: "cc_total_octets",
                CC_INPUT_OCTETS: "cc_input_octets",
                CC_OUTPUT_OCTETS: "cc_output_octets",
                CC_SERVICE_SPECIFIC_UNITS: "cc_service_specific_units",
            }
            d["granted"] = {names.get(u.code, str(u.code)): u.value for u in a.value}
    return d


def list_avps():
    """Every AVP of the three CCRs as the SMF sends them: name, code, vendor, flags."""

    class Offline:
        def next_hbh(self):
            return 0

        def next_e2e(self):
            return 0

    smf = Smf(Offline())
    for kind, number, name in ((INITIAL, 0, "CCR-I"), (UPDATE, 1, "CCR-U"), (TERMINATION, 2, "CCR-T")):
        if kind != INITIAL:
            smf.peer_host = b"ocs.test"
        print(f"== {name}")
        _print_tree(smf.ccr(kind, number).avps, 1)


def _print_tree(avps, depth):
    for a in avps:
        flags = ("V" if a.is_vendor else "-") + ("M" if a.is_mandatory else "-")
        vendor = f"/{a.vendor_id}" if a.vendor_id else ""
        print(f"{'  ' * depth}{a.name} ({a.code}{vendor}) {flags}")
        if isinstance(a, AvpGrouped):
            _print_tree(a.value, depth + 1)


def main(argv):
    if len(argv) == 2 and argv[1] == "--list-avps":
        list_avps()
        return 0
    return run(argv, "gy_open5gs.py HOST:PORT CCA_HEX_FILE | --list-avps", SmfClient)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
