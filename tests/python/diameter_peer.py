"""The Diameter client side that Tollgate's python-diameter test scripts share.

ro_client.py (an Ro client) and gy_open5gs.py (Open5GS's SMF on Gy) differ in the requests
they build and what they expect of the answers; what they share lives here: one TCP
connection with RFC 6733 framing and identifiers, the CER/CEA and DPR/DPA exchanges, answers
to Tollgate's watchdog requests, the checks every CCA must pass (RFC 4006 §3.2), the JSON
line printed per answer, the CCA hex file, the failed-expectation list and the exit codes.

Every message is encoded and decoded by python-diameter (PyPI `python-diameter`, import name
`diameter`), so what Tollgate sees was not produced by its own codec. Exit codes of a script
run through `run`: 0 when every expectation held, 1 when one did not (listed on stderr), 2
on a transport or decoding failure, 3 without python-diameter, 64 on a usage error.
"""

import json
import random
import socket
import struct
import sys
import time

try:
    from diameter.message import Message, MessageHeader
    from diameter.message.avp import Avp, AvpGrouped
except ImportError as e:  # the Rust tests check this first; be clear when run by hand
    print(f"python-diameter is not installed ({e}); pip install python-diameter", file=sys.stderr)
    sys.exit(3)

TIMEOUT_S = 30.0

# Command codes (RFC 6733 §3.1, RFC 4006 §3.1), application ids (RFC 6733 §2.4, RFC 4006 §12.1)
# and command flags (RFC 6733 §3).
CMD_CER, CMD_DWR, CMD_DPR, CMD_CCR = 257, 280, 282, 272
APP_COMMON, APP_CC = 0, 4
FLAG_R, FLAG_P, FLAG_T = 0x80, 0x40, 0x10

# The AVPs read or written here (RFC 6733 §4.5, RFC 4006 §8).
SESSION_ID, ORIGIN_HOST_AVP, ORIGIN_REALM_AVP = 263, 264, 296
AUTH_APPLICATION_ID, RESULT_CODE, DISCONNECT_CAUSE = 258, 268, 273
CC_REQUEST_TYPE, CC_REQUEST_NUMBER = 416, 415

# Failed expectations, reported together at the end.
STEP_FAILURES = []


class ProtocolFailure(Exception):
    """The transport or the peer broke the Diameter exchange; no point going on."""


def new_avp(code, value, vendor, mandatory):
    """One AVP with the M bit the caller's flag rule chose, not python-diameter's dictionary
    default (which marks Product-Name mandatory, for instance); V follows the vendor id and
    grouped values are lists of AVPs."""
    return Avp.new(code, vendor, value=value, is_mandatory=mandatory, is_private=False)


def base_avp(code, value):
    """A base-protocol AVP of the CER, DPR and DWA: all "M must" (RFC 6733 §4.5)."""
    return new_avp(code, value, 0, True)


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
    """A request with the next Hop-by-Hop id and the next End-to-End id, or `e2e` when it
    repeats an earlier request (RFC 6733 §3: a retransmission keeps its End-to-End id)."""
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


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


def _walk(avps):
    for a in avps:
        if isinstance(a, AvpGrouped):
            _walk(a.value)
        else:
            _ = a.value


def expect(step, what, ok):
    if not ok:
        STEP_FAILURES.append(f"{step}: expected {what}")


def print_failures():
    for f in STEP_FAILURES:
        print(f"FAIL {f}", file=sys.stderr)


class Connection:
    """One TCP connection to Tollgate. `origin_host` and `origin_realm` identify the client
    in its answers to Tollgate's watchdog requests."""

    def __init__(self, addr, ids, origin_host, origin_realm):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S)
        self.sock.settimeout(TIMEOUT_S)
        self.ids = ids
        self.origin_host = origin_host
        self.origin_realm = origin_realm
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
                self._answer_watchdog(ans)
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

    def _answer_watchdog(self, req):
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
        answer = [
            base_avp(RESULT_CODE, 2001),
            base_avp(ORIGIN_HOST_AVP, self.origin_host.encode()),
            base_avp(ORIGIN_REALM_AVP, self.origin_realm.encode()),
        ]
        self.send(Message(hdr, answer))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """A client's connection and the exchanges every script makes on it: CER/CEA first,
    DPR/DPA last, and in between CCRs whose answers are printed, checked and written to the
    CCA hex file. A script subclasses it with `cer` (its CER AVPs to `exchange_capabilities`)
    and `flows` (its CCRs, returning the summary line's own fields)."""

    def __init__(self, addr, cca_file, origin_host, origin_realm):
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.ids = Ids()
        self.conn = Connection(addr, self.ids, origin_host, origin_realm)
        self.cca_file = cca_file
        self.ccas = 0

    def report(self, step, msg, **extra):
        """Prints the answer as one JSON line: {"step": ..., "result_code": N, ...}."""
        line = {"step": step, "result_code": value_of(msg.avps, RESULT_CODE)}
        if msg.header.is_error:
            line["e_bit"] = True
        line.update(extra)
        print(json.dumps(line), flush=True)
        return line

    def exchange_capabilities(self, avps):
        """CER/CEA: Tollgate must accept and advertise the credit-control application."""
        ans, _ = self.conn.ask(request(CMD_CER, APP_COMMON, FLAG_R, avps, self.ids))
        apps = [a.value for a in ans.avps if a.code == AUTH_APPLICATION_ID]
        line = self.report("cer", ans, origin_host=_text(value_of(ans.avps, ORIGIN_HOST_AVP)), auth_application_ids=apps)
        expect("cer", f"Result-Code 2001, got {line['result_code']}", line["result_code"] == 2001)
        expect("cer", "Auth-Application-Id 4 advertised", APP_CC in apps)
        if line["result_code"] != 2001:
            raise ProtocolFailure("capabilities exchange failed")

    def dpr(self):
        avps = [
            base_avp(ORIGIN_HOST_AVP, self.origin_host.encode()),
            base_avp(ORIGIN_REALM_AVP, self.origin_realm.encode()),
            base_avp(DISCONNECT_CAUSE, 0),  # REBOOTING: we may come back
        ]
        ans, _ = self.conn.ask(request(CMD_DPR, APP_COMMON, FLAG_R, avps, self.ids))
        line = self.report("dpr", ans)
        expect("dpr", f"Result-Code 2001, got {line['result_code']}", line["result_code"] == 2001)
        # RFC 6733 §5.4: the receiver of the DPA closes the transport.
        self.conn.close()

    def ask_recorded(self, req):
        """Sends a CCR and writes the raw CCA as hex to the CCA file (one per line)."""
        ans, raw = self.conn.ask(req)
        self.cca_file.write(raw.hex() + "\n")
        self.cca_file.flush()
        self.ccas += 1
        return ans

    @staticmethod
    def expect_cca(step, req, ans, result_code):
        """What every CCA must be (RFC 4006 §3.2): the Result-Code wanted, no E bit, the P bit,
        Session-Id, CC-Request-Type and CC-Request-Number echoed, Auth-Application-Id 4."""
        avps, sent = ans.avps, req.avps
        got = value_of(avps, RESULT_CODE)
        expect(step, f"Result-Code {result_code}, got {got}", got == result_code)
        expect(step, "no E bit in a CCA", not ans.header.is_error)
        expect(step, "the P bit echoed", ans.header.is_proxyable)
        expect(step, "Session-Id echoed", value_of(avps, SESSION_ID) == value_of(sent, SESSION_ID))
        expect(step, "Auth-Application-Id 4", value_of(avps, AUTH_APPLICATION_ID) == APP_CC)
        expect(step, "CC-Request-Type echoed", value_of(avps, CC_REQUEST_TYPE) == value_of(sent, CC_REQUEST_TYPE))
        expect(step, "CC-Request-Number echoed", value_of(avps, CC_REQUEST_NUMBER) == value_of(sent, CC_REQUEST_NUMBER))


def run(argv, usage, client_class):
    """A script's run for `argv` = [script, HOST:PORT, CCA_HEX_FILE]: a `client_class`
    connection, its CER, its flows and DPR, then the summary line; returns the exit code."""
    if len(argv) != 3 or ":" not in argv[1]:
        print(f"usage: {usage}", file=sys.stderr)
        return 64
    with open(argv[2], "w", encoding="ascii") as cca_file:
        try:
            client = client_class(argv[1], cca_file)
            client.cer()
            summary = client.flows()
            client.dpr()
        except (ProtocolFailure, OSError) as e:
            print_failures()
            print(f"FAIL transport: {e}", file=sys.stderr)
            return 2
    print(json.dumps({"step": "summary", "ccas": client.ccas, **summary, "failures": len(STEP_FAILURES)}))
    if STEP_FAILURES:
        print_failures()
        return 1
    return 0
