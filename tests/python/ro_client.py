#!/usr/bin/env python3
"""An independent Diameter Ro client for Tollgate's end-to-end tests.

Every message is encoded and decoded by python-diameter (PyPI `python-diameter`,
import name `diameter`), so what Tollgate sees here was not produced by its own codec.
The transport is a plain TCP socket; the AVP flags are set by this script from the
RFC 6733 / RFC 4006 / TS 32.299 flag rules instead of python-diameter's dictionary
defaults (which mark Product-Name mandatory, for instance).

Usage: ro_client.py HOST:PORT CCA_HEX_FILE

Flows, in order, over one connection:
  cer            CER/CEA                                                -> 2001
  scur-i/u/t     CCR-I RSU{CC-Time 60} RG 10, CCR-U USU{CC-Time 42}+RSU,
                 CCR-T USU{CC-Time 30}                                  -> 2001 each
  ecur-i/t       CCR-I RSU{CC-Service-Specific-Units 5}, CCR-T USU 3    -> 2001, GSU 5
  iec            CCR-E DIRECT_DEBITING RSU{units 2}                     -> 2001, GSU 2
  check-balance  CCR-E CHECK_BALANCE                                    -> 2001, Check-Balance-Result 0
  unknown-user   CCR-E for a subscriber nobody provisioned              -> 5030
  ecur-t-retx    the ECUR CCR-T again: same Session-Id, CC-Request-Number and
                 End-to-End id, T flag set                              -> same Result-Code
  ecur-t-replay  the ECUR CCR-T again with a new End-to-End id (so only the
                 (Session-Id, CC-Request-Number) idempotency can catch it) -> same Result-Code
  dpr            DPR/DPA                                                -> 2001

Prints one JSON object per answer on stdout ({"step": ..., "result_code": N, ...}), writes
the raw bytes of every CCA as hex (one per line) to CCA_HEX_FILE, and exits 0 only if every
expectation held; otherwise it lists the failed expectations on stderr and exits 1
(2 on a transport or decoding failure, 64 on a usage error). Whether a repeated CCR-T
charged twice is for the caller to check in the ledger.
"""

import datetime
import os
import random
import sys
import time

# The shared client side lives next to this script; leave no __pycache__ there.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diameter_peer import (  # noqa: E402  (exits 3 without python-diameter)
    APP_CC,
    CMD_CCR,
    FLAG_P,
    FLAG_R,
    FLAG_T,
    Client,
    expect,
    first,
    new_avp,
    request,
    run,
    value_of,
)
from diameter.message.constants import (  # noqa: E402
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS,
    AVP_CC_TIME,
    AVP_CHECK_BALANCE_RESULT,
    AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM,
    AVP_EVENT_TIMESTAMP,
    AVP_GRANTED_SERVICE_UNIT,
    AVP_HOST_IP_ADDRESS,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_MULTIPLE_SERVICES_INDICATOR,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RATING_GROUP,
    AVP_REQUESTED_ACTION,
    AVP_REQUESTED_SERVICE_UNIT,
    AVP_RESULT_CODE,
    AVP_SERVICE_CONTEXT_ID,
    AVP_SESSION_ID,
    AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA,
    AVP_SUBSCRIPTION_ID_TYPE,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_TERMINATION_CAUSE,
    AVP_TGPP_3GPP_REPORTING_REASON,
    AVP_USED_SERVICE_UNIT,
    AVP_VALIDITY_TIME,
    AVP_VENDOR_ID,
    VENDOR_TGPP,
)

ORIGIN_HOST = "pyclient.test"
ORIGIN_REALM = "test"
DESTINATION_REALM = "test"
SERVICE_CONTEXT = "32260@3gpp.org"
SUBSCRIBER = "15550000001"
UNKNOWN_SUBSCRIBER = "15559999999"

# CC-Request-Type, Requested-Action, Subscription-Id-Type values (RFC 4006).
INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4
DIRECT_DEBITING, CHECK_BALANCE = 0, 2
END_USER_E164 = 0

# Mandatory bit per RFC 6733 §4.5 / RFC 4006 §8 / TS 32.299 §7: every AVP used here is
# "M must" except Product-Name (M must not). Set explicitly, not from the library default.
M_MUSTNOT = {AVP_PRODUCT_NAME}


def avp(code, value, vendor=0):
    """One AVP encoded by python-diameter, with the M bit from the rule above (V follows
    the vendor id); grouped values are lists of AVPs built by this function."""
    return new_avp(code, value, vendor, code not in M_MUSTNOT)


def grouped(code, members, vendor=0):
    return avp(code, list(members), vendor)


def ccr_head(origin_host, origin_realm, server_host, origin_state, session, kind, number):
    """The AVPs every CCR of these clients starts with (RFC 4006 §3.1), in order."""
    avps = [
        avp(AVP_SESSION_ID, session),
        avp(AVP_ORIGIN_HOST, origin_host.encode()),
        avp(AVP_ORIGIN_REALM, origin_realm.encode()),
        avp(AVP_DESTINATION_REALM, DESTINATION_REALM.encode()),
        avp(AVP_AUTH_APPLICATION_ID, APP_CC),
        avp(AVP_SERVICE_CONTEXT_ID, SERVICE_CONTEXT),
        avp(AVP_CC_REQUEST_TYPE, kind),
        avp(AVP_CC_REQUEST_NUMBER, number),
    ]
    # Later requests of a session go to the host that answered the first (RFC 4006 §5.1).
    if kind in (UPDATE, TERMINATION) and server_host:
        avps.append(avp(AVP_DESTINATION_HOST, server_host))
    avps.append(avp(AVP_ORIGIN_STATE_ID, origin_state))
    avps.append(avp(AVP_EVENT_TIMESTAMP, datetime.datetime.now(datetime.timezone.utc)))
    return avps


class RoClient(Client):
    def __init__(self, addr, cca_file):
        super().__init__(addr, cca_file, ORIGIN_HOST, ORIGIN_REALM)
        self.server_host = None
        self.origin_state = int(time.time()) & 0xFFFFFFFF
        self.session_counter = random.getrandbits(32)

    # --- message builders ---------------------------------------------------------------

    def session_id(self, tag):
        self.session_counter = (self.session_counter + 1) & 0xFFFFFFFF
        return f"{ORIGIN_HOST};{self.origin_state};{self.session_counter};{tag}"

    def ccr(self, session, kind, number, body):
        avps = ccr_head(ORIGIN_HOST, ORIGIN_REALM, self.server_host, self.origin_state, session, kind, number)
        avps.extend(body)
        return request(CMD_CCR, APP_CC, FLAG_R | FLAG_P, avps, self.ids)

    @staticmethod
    def subscription(data):
        return grouped(
            AVP_SUBSCRIPTION_ID,
            [avp(AVP_SUBSCRIPTION_ID_TYPE, END_USER_E164), avp(AVP_SUBSCRIPTION_ID_DATA, data)],
        )

    @staticmethod
    def mscc(rsu=None, usu=None, rating_group=None, reporting_reason=None):
        members = []
        if rsu is not None:
            members.append(grouped(AVP_REQUESTED_SERVICE_UNIT, rsu))
        if usu is not None:
            usu = list(usu)
            if reporting_reason is not None:
                usu.append(avp(AVP_TGPP_3GPP_REPORTING_REASON, reporting_reason, VENDOR_TGPP))
            members.append(grouped(AVP_USED_SERVICE_UNIT, usu))
        if rating_group is not None:
            members.append(avp(AVP_RATING_GROUP, rating_group))
        return grouped(AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, members)

    # --- exchanges ----------------------------------------------------------------------

    def ask_cc(self, step, req, expect_code, expect_request_number=None):
        """Sends a CCR, records the CCA's bytes, checks the CCA's echo fields and
        command-level Result-Code, and returns (answer, JSON line, MSCCs)."""
        ans = self.ask_recorded(req)
        avps = ans.avps
        msccs = [a for a in avps if a.code == AVP_MULTIPLE_SERVICES_CREDIT_CONTROL and a.vendor_id == 0]
        info = {}
        if msccs:
            info["mscc"] = [describe_mscc(m) for m in msccs]
        for code, key in ((AVP_CHECK_BALANCE_RESULT, "check_balance_result"), (AVP_CC_REQUEST_NUMBER, "cc_request_number")):
            v = value_of(avps, code)
            if v is not None:
                info[key] = v
        info["session_id"] = value_of(avps, AVP_SESSION_ID)
        line = self.report(step, ans, **info)
        self.expect_cca(step, req, ans, expect_code)
        if self.server_host is None:
            self.server_host = value_of(avps, AVP_ORIGIN_HOST)
        return ans, line, msccs

    def cer(self):
        avps = [
            avp(AVP_ORIGIN_HOST, ORIGIN_HOST.encode()),
            avp(AVP_ORIGIN_REALM, ORIGIN_REALM.encode()),
            avp(AVP_HOST_IP_ADDRESS, self.conn.local_ip),
            avp(AVP_VENDOR_ID, 0),
            avp(AVP_PRODUCT_NAME, "tollgate-ro-client (python-diameter)"),
            avp(AVP_ORIGIN_STATE_ID, self.origin_state),
            avp(AVP_SUPPORTED_VENDOR_ID, VENDOR_TGPP),
            avp(AVP_AUTH_APPLICATION_ID, APP_CC),
        ]
        self.exchange_capabilities(avps)

    def flows(self):
        self.scur()
        ecur_sid, ecur_t, ecur_t_line = self.ecur()
        self.iec()
        self.check_balance()
        self.unknown_user()
        self.retransmit(ecur_t, ecur_t_line)
        return {"ecur_session_id": ecur_sid}

    def scur(self):
        sid = self.session_id("scur")
        req = self.ccr(
            sid,
            INITIAL,
            0,
            [
                self.subscription(SUBSCRIBER),
                avp(AVP_MULTIPLE_SERVICES_INDICATOR, 1),
                self.mscc(rsu=[avp(AVP_CC_TIME, 60)], rating_group=10),
            ],
        )
        _, _, msccs = self.ask_cc("scur-i", req, 2001)
        m = mscc_for(msccs, 10)
        expect("scur-i", "an MSCC for rating group 10", m is not None)
        if m is not None:
            g = granted(m)
            expect("scur-i", f"a GSU in CC-Time (got {g})", g is not None and g[0] == "cc_time" and g[1] > 0)
            expect("scur-i", "MSCC Result-Code 2001", value_of(m.value, AVP_RESULT_CODE) == 2001)

        req = self.ccr(
            sid,
            UPDATE,
            1,
            [
                self.subscription(SUBSCRIBER),
                self.mscc(
                    rsu=[avp(AVP_CC_TIME, 60)],
                    usu=[avp(AVP_CC_TIME, 42)],
                    rating_group=10,
                    reporting_reason=3,  # QUOTA_EXHAUSTED (inside USU)
                ),
            ],
        )
        _, _, msccs = self.ask_cc("scur-u", req, 2001)
        m = mscc_for(msccs, 10)
        expect("scur-u", "an MSCC for rating group 10", m is not None)
        if m is not None:
            g = granted(m)
            expect("scur-u", f"a new GSU in CC-Time (got {g})", g is not None and g[0] == "cc_time")

        req = self.ccr(
            sid,
            TERMINATION,
            2,
            [
                self.subscription(SUBSCRIBER),
                avp(AVP_TERMINATION_CAUSE, 1),  # DIAMETER_LOGOUT
                self.mscc(usu=[avp(AVP_CC_TIME, 30)], rating_group=10, reporting_reason=2),  # FINAL
            ],
        )
        self.ask_cc("scur-t", req, 2001)

    def ecur(self):
        sid = self.session_id("ecur")
        req = self.ccr(
            sid,
            INITIAL,
            0,
            [
                self.subscription(SUBSCRIBER),
                avp(AVP_MULTIPLE_SERVICES_INDICATOR, 1),
                self.mscc(rsu=[avp(AVP_CC_SERVICE_SPECIFIC_UNITS, 5)]),
            ],
        )
        _, _, msccs = self.ask_cc("ecur-i", req, 2001)
        expect("ecur-i", f"one MSCC (got {len(msccs)})", len(msccs) == 1)
        if msccs:
            g = granted(msccs[0])
            expect("ecur-i", f"GSU CC-Service-Specific-Units 5 (got {g})", g == ("cc_service_specific_units", 5))

        req_t = self.ccr(
            sid,
            TERMINATION,
            1,
            [
                self.subscription(SUBSCRIBER),
                avp(AVP_TERMINATION_CAUSE, 1),
                self.mscc(usu=[avp(AVP_CC_SERVICE_SPECIFIC_UNITS, 3)], reporting_reason=2),
            ],
        )
        _, first_t, _ = self.ask_cc("ecur-t", req_t, 2001)
        return sid, req_t, first_t

    def iec(self):
        req = self.ccr(
            self.session_id("iec"),
            EVENT,
            0,
            [
                self.subscription(SUBSCRIBER),
                avp(AVP_REQUESTED_ACTION, DIRECT_DEBITING),
                avp(AVP_MULTIPLE_SERVICES_INDICATOR, 1),
                self.mscc(rsu=[avp(AVP_CC_SERVICE_SPECIFIC_UNITS, 2)]),
            ],
        )
        _, _, msccs = self.ask_cc("iec", req, 2001)
        if msccs:
            g = granted(msccs[0])
            expect("iec", f"GSU = debited units 2 (got {g})", g == ("cc_service_specific_units", 2))

    def check_balance(self):
        req = self.ccr(
            self.session_id("balance"),
            EVENT,
            0,
            [self.subscription(SUBSCRIBER), avp(AVP_REQUESTED_ACTION, CHECK_BALANCE)],
        )
        _, line, _ = self.ask_cc("check-balance", req, 2001)
        expect(
            "check-balance",
            f"Check-Balance-Result 0 ENOUGH_CREDIT (got {line.get('check_balance_result')})",
            line.get("check_balance_result") == 0,
        )

    def unknown_user(self):
        req = self.ccr(
            self.session_id("unknown"),
            EVENT,
            0,
            [
                self.subscription(UNKNOWN_SUBSCRIBER),
                avp(AVP_REQUESTED_ACTION, DIRECT_DEBITING),
                avp(AVP_MULTIPLE_SERVICES_INDICATOR, 1),
                self.mscc(rsu=[avp(AVP_CC_SERVICE_SPECIFIC_UNITS, 1)]),
            ],
        )
        self.ask_cc("unknown-user", req, 5030)

    def retransmit(self, original, first_line):
        """The ECUR CCR-T again, AVP for AVP (same Session-Id, CC-Request-Number, Event-Timestamp
        ...), with the T flag and a new Hop-by-Hop id. First as a real retransmission (RFC 6733 §3:
        same End-to-End id), then with a new End-to-End id so that only the (Session-Id,
        CC-Request-Number) idempotency of RFC 4006 §5.1 and docs/protocol.md, "Duplicates and
        idempotency" can recognise it. Both must get the first answer again."""
        for step, e2e in (("ecur-t-retx", original.header.end_to_end_identifier), ("ecur-t-replay", None)):
            req = request(CMD_CCR, APP_CC, FLAG_R | FLAG_P | FLAG_T, original.avps, self.ids, e2e=e2e)
            _, line, _ = self.ask_cc(step, req, first_line["result_code"])
            expect(step, f"the first CCA's content again ({first_line} vs {line})", _same(line, first_line))


def _same(a, b):
    keys = ("result_code", "mscc", "check_balance_result", "cc_request_number", "session_id")
    return all(a.get(k) == b.get(k) for k in keys)


def mscc_for(msccs, rating_group):
    for m in msccs:
        if value_of(m.value, AVP_RATING_GROUP) == rating_group:
            return m
    return None


def granted(mscc):
    """("cc_time"|"cc_service_specific_units"|..., amount) of an MSCC's GSU, or None."""
    gsu = first(mscc.value, AVP_GRANTED_SERVICE_UNIT)
    if gsu is None:
        return None
    for a in gsu.value:
        if a.code == AVP_CC_TIME:
            return ("cc_time", a.value)
        if a.code == AVP_CC_SERVICE_SPECIFIC_UNITS:
            return ("cc_service_specific_units", a.value)
    return ("other", None)


def describe_mscc(m):
    d = {}
    for a in m.value:
        if a.code == AVP_RATING_GROUP:
            d["rating_group"] = a.value
        elif a.code == AVP_RESULT_CODE:
            d["result_code"] = a.value
        elif a.code == AVP_VALIDITY_TIME:
            d["validity_time"] = a.value
    g = granted(m)
    if g is not None:
        d["granted"] = {g[0]: g[1]}
    return d


def main(argv):
    return run(argv, "ro_client.py HOST:PORT CCA_HEX_FILE", RoClient)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
