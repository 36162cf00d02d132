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
import json
import random
import socket
import struct
import sys
import time

try:
    from diameter.message import Message, MessageHeader
    from diameter.message.avp import Avp, AvpGrouped
    from diameter.message.constants import (
        AVP_AUTH_APPLICATION_ID,
        AVP_CC_REQUEST_NUMBER,
        AVP_CC_REQUEST_TYPE,
        AVP_CC_SERVICE_SPECIFIC_UNITS,
        AVP_CC_TIME,
        AVP_CHECK_BALANCE_RESULT,
        AVP_DESTINATION_HOST,
        AVP_DESTINATION_REALM,
        AVP_DISCONNECT_CAUSE,
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
except ImportError as e:  # the Rust test checks this first; be clear when run by hand
    print(f"python-diameter is not installed ({e}); pip install python-diameter", file=sys.stderr)
    sys.exit(3)

ORIGIN_HOST = "pyclient.test"
ORIGIN_REALM = "test"
DESTINATION_REALM = "test"
SERVICE_CONTEXT = "32260@3gpp.org"
SUBSCRIBER = "15550000001"
UNKNOWN_SUBSCRIBER = "15559999999"
TIMEOUT_S = 30.0

CMD_CER, CMD_DWR, CMD_DPR, CMD_CCR = 257, 280, 282, 272
APP_COMMON, APP_CC = 0, 4
FLAG_R, FLAG_P, FLAG_E, FLAG_T = 0x80, 0x40, 0x20, 0x10

# CC-Request-Type, Requested-Action, Subscription-Id-Type values (RFC 4006).
INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4
DIRECT_DEBITING, CHECK_BALANCE = 0, 2
END_USER_E164 = 0

# Mandatory bit per RFC 6733 §4.5 / RFC 4006 §8 / TS 32.299 §7: every AVP used here is
# "M must" except Product-Name (M must not). Set explicitly, not from the library default.
M_MUSTNOT = {AVP_PRODUCT_NAME}

# Failed expectations, reported together at the end.
_STEP_FAILURES = []


class ProtocolFailure(Exception):
    """The transport or the peer broke the Diameter exchange; no point going on."""


def avp(code, value, vendor=0):
    """One AVP encoded by python-diameter, with the M bit from the rule above (V follows
    the vendor id); grouped values are lists of AVPs built by this function."""
    return Avp.new(code, vendor, value=value, is_mandatory=code not in M_MUSTNOT, is_private=False)


def grouped(code, members, vendor=0):
    return avp(code, list(members), vendor)


class Ids:
    """Hop-by-Hop (per connection) and End-to-End (per sender, RFC 6733 §3: high 12 bits
    from the boot time, low 20 random) identifiers."""

    def __init__(self):
        self.hbh = random.getrandbits(32)
        self.e2e = ((int(time.time()) & 0xFFF) << 20) | random.getrandbits(20)

    def next_hbh(self):
        self.hbh = (self.hbh + 1) & 0xFFFFFFFF
        return self.hbh

    def next_e2e(self):
        self.e2e = (self.e2e + 1) & 0xFFFFFFFF
        return self.e2e


def request(command, app, flags, avps, ids, e2e=None):
    header = MessageHeader(
        version=1,
        command_flags=flags,
        command_code=command,
        application_id=app,
        hop_by_hop_identifier=ids.next_hbh(),
        end_to_end_identifier=ids.next_e2e() if e2e is None else e2e,
    )
    return Message(header, list(avps))


def first(avps, code, vendor=0):
    for a in avps:
        if a.code == code and a.vendor_id == vendor:
            return a
    return None


def value_of(avps, code, vendor=0):
    a = first(avps, code, vendor)
    return None if a is None else a.value


class Connection:
    def __init__(self, addr, ids):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S)
        self.sock.settimeout(TIMEOUT_S)
        self.ids = ids
        self.local_ip = self.sock.getsockname()[0]

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise ProtocolFailure(f"no data from Tollgate within {TIMEOUT_S:.0f} s") from None
            if not chunk:
                raise ProtocolFailure("Tollgate closed the connection")
            buf += chunk
        return buf

    def read_message(self):
        head = self._read_exact(20)
        version, length = head[0], struct.unpack(">I", b"\0" + head[1:4])[0]
        if version != 1 or length < 20 or length % 4:
            raise ProtocolFailure(f"bad Diameter header {head.hex()}")
        raw = head + self._read_exact(length - 20)
        try:
            msg = Message.from_bytes(raw)
            # Force-decode every AVP (grouped values decode lazily) so a bad encoding
            # surfaces here, not halfway through a check.
            _walk(msg.avps)
        except Exception as e:  # python-diameter raises several unrelated types
            raise ProtocolFailure(f"python-diameter cannot decode {raw.hex()}: {e}") from None
        return msg, raw

    def send(self, msg):
        self.sock.sendall(msg.as_bytes())

    def ask(self, msg):
        """Sends a request and returns (answer, raw bytes) for its Hop-by-Hop id; answers
        watchdog requests from Tollgate meanwhile."""
        self.send(msg)
        want = msg.header.hop_by_hop_identifier
        while True:
            ans, raw = self.read_message()
            h = ans.header
            if h.is_request:
                self._answer_request(ans)
                continue
            if h.hop_by_hop_identifier != want:
                raise ProtocolFailure(
                    f"answer with unexpected Hop-by-Hop 0x{h.hop_by_hop_identifier:08x} "
                    f"(want 0x{want:08x})"
                )
            if h.end_to_end_identifier != msg.header.end_to_end_identifier:
                raise ProtocolFailure("answer does not echo the End-to-End identifier")
            if h.command_code != msg.header.command_code:
                raise ProtocolFailure(f"answer command {h.command_code} to request {msg.header.command_code}")
            return ans, raw

    def _answer_request(self, req):
        if req.header.command_code != CMD_DWR:
            raise ProtocolFailure(f"unexpected request {req.header.command_code} from Tollgate")
        hdr = MessageHeader(
            version=1,
            command_flags=0,
            command_code=CMD_DWR,
            application_id=APP_COMMON,
            hop_by_hop_identifier=req.header.hop_by_hop_identifier,
            end_to_end_identifier=req.header.end_to_end_identifier,
        )
        self.send(
            Message(
                hdr,
                [
                    avp(AVP_RESULT_CODE, 2001),
                    avp(AVP_ORIGIN_HOST, ORIGIN_HOST.encode()),
                    avp(AVP_ORIGIN_REALM, ORIGIN_REALM.encode()),
                ],
            )
        )

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _walk(avps):
    for a in avps:
        if isinstance(a, AvpGrouped):
            _walk(a.value)
        else:
            _ = a.value


def expect(step, what, ok):
    if not ok:
        _STEP_FAILURES.append(f"{step}: expected {what}")


class Client:
    def __init__(self, addr, cca_file):
        self.ids = Ids()
        self.conn = Connection(addr, self.ids)
        self.cca_file = cca_file
        self.server_host = None
        self.origin_state = int(time.time()) & 0xFFFFFFFF
        self.session_counter = random.getrandbits(32)
        self.ccas = 0

    # --- message builders ---------------------------------------------------------------

    def session_id(self, tag):
        self.session_counter = (self.session_counter + 1) & 0xFFFFFFFF
        return f"{ORIGIN_HOST};{self.origin_state};{self.session_counter};{tag}"

    def ccr(self, session, kind, number, body):
        avps = [
            avp(AVP_SESSION_ID, session),
            avp(AVP_ORIGIN_HOST, ORIGIN_HOST.encode()),
            avp(AVP_ORIGIN_REALM, ORIGIN_REALM.encode()),
            avp(AVP_DESTINATION_REALM, DESTINATION_REALM.encode()),
            avp(AVP_AUTH_APPLICATION_ID, APP_CC),
            avp(AVP_SERVICE_CONTEXT_ID, SERVICE_CONTEXT),
            avp(AVP_CC_REQUEST_TYPE, kind),
            avp(AVP_CC_REQUEST_NUMBER, number),
        ]
        # Later requests of a session go to the host that answered the first (RFC 4006 §5.1).
        if kind in (UPDATE, TERMINATION) and self.server_host:
            avps.append(avp(AVP_DESTINATION_HOST, self.server_host))
        avps.append(avp(AVP_ORIGIN_STATE_ID, self.origin_state))
        avps.append(avp(AVP_EVENT_TIMESTAMP, datetime.datetime.now(datetime.timezone.utc)))
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

    def report(self, step, msg, **extra):
        line = {"step": step, "result_code": value_of(msg.avps, AVP_RESULT_CODE)}
        if msg.header.is_error:
            line["e_bit"] = True
        line.update(extra)
        print(json.dumps(line), flush=True)
        return line

    def ask_cc(self, step, req, expect_code, expect_request_number=None):
        """Sends a CCR, records the CCA's bytes, checks the CCA's echo fields and
        command-level Result-Code, and returns (answer, JSON line, MSCCs)."""
        ans, raw = self.conn.ask(req)
        self.cca_file.write(raw.hex() + "\n")
        self.cca_file.flush()
        self.ccas += 1
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
        sent = req.avps
        expect(step, f"Result-Code {expect_code}, got {line['result_code']}", line["result_code"] == expect_code)
        expect(step, "no E bit in a CCA", not ans.header.is_error)
        expect(step, "the P bit echoed", ans.header.is_proxyable)
        expect(step, "Session-Id echoed", info["session_id"] == value_of(sent, AVP_SESSION_ID))
        expect(step, "Auth-Application-Id 4", value_of(avps, AVP_AUTH_APPLICATION_ID) == APP_CC)
        expect(step, "CC-Request-Type echoed", value_of(avps, AVP_CC_REQUEST_TYPE) == value_of(sent, AVP_CC_REQUEST_TYPE))
        expect(
            step,
            "CC-Request-Number echoed",
            info.get("cc_request_number") == value_of(sent, AVP_CC_REQUEST_NUMBER),
        )
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
        ans, _ = self.conn.ask(request(CMD_CER, APP_COMMON, FLAG_R, avps, self.ids))
        apps = [a.value for a in ans.avps if a.code == AVP_AUTH_APPLICATION_ID]
        line = self.report("cer", ans, origin_host=_text(value_of(ans.avps, AVP_ORIGIN_HOST)), auth_application_ids=apps)
        expect("cer", f"Result-Code 2001, got {line['result_code']}", line["result_code"] == 2001)
        expect("cer", "Auth-Application-Id 4 advertised", APP_CC in apps)
        if line["result_code"] != 2001:
            raise ProtocolFailure("capabilities exchange failed")

    def dpr(self):
        avps = [
            avp(AVP_ORIGIN_HOST, ORIGIN_HOST.encode()),
            avp(AVP_ORIGIN_REALM, ORIGIN_REALM.encode()),
            avp(AVP_DISCONNECT_CAUSE, 0),  # REBOOTING: we may come back
        ]
        ans, _ = self.conn.ask(request(CMD_DPR, APP_COMMON, FLAG_R, avps, self.ids))
        line = self.report("dpr", ans)
        expect("dpr", f"Result-Code 2001, got {line['result_code']}", line["result_code"] == 2001)
        # RFC 6733 §5.4: the receiver of the DPA closes the transport.
        self.conn.close()

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
        """The ECUR CCR-T again, AVP for AVP (same Session-Id, CC-Request-Number,
        Event-Timestamp ...), with the T flag and a new Hop-by-Hop id. First as a real
        retransmission (RFC 6733 §3: same End-to-End id), then with a new End-to-End id so
        that only the (Session-Id, CC-Request-Number) idempotency of RFC 4006 §5.1 and
        spec §2.8 can recognise it. Both must get the first answer again."""
        for step, e2e in (("ecur-t-retx", original.header.end_to_end_identifier), ("ecur-t-replay", None)):
            req = request(CMD_CCR, APP_CC, FLAG_R | FLAG_P | FLAG_T, original.avps, self.ids, e2e=e2e)
            _, line, _ = self.ask_cc(step, req, first_line["result_code"])
            expect(step, f"the first CCA's content again ({first_line} vs {line})", _same(line, first_line))


def _same(a, b):
    keys = ("result_code", "mscc", "check_balance_result", "cc_request_number", "session_id")
    return all(a.get(k) == b.get(k) for k in keys)


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


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
    if len(argv) != 3 or ":" not in argv[1]:
        print("usage: ro_client.py HOST:PORT CCA_HEX_FILE", file=sys.stderr)
        return 64
    with open(argv[2], "w", encoding="ascii") as cca_file:
        try:
            c = Client(argv[1], cca_file)
            c.cer()
            c.scur()
            ecur_sid, ecur_t, ecur_t_line = c.ecur()
            c.iec()
            c.check_balance()
            c.unknown_user()
            c.retransmit(ecur_t, ecur_t_line)
            c.dpr()
        except (ProtocolFailure, OSError) as e:
            for f in _STEP_FAILURES:
                print(f"FAIL {f}", file=sys.stderr)
            print(f"FAIL transport: {e}", file=sys.stderr)
            return 2
    print(json.dumps({"step": "summary", "ccas": c.ccas, "ecur_session_id": ecur_sid, "failures": len(_STEP_FAILURES)}))
    if _STEP_FAILURES:
        for f in _STEP_FAILURES:
            print(f"FAIL {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
