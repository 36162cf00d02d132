#!/usr/bin/env python3
"""An Ro client that Tollgate re-authorises or aborts, for Tollgate's end-to-end tests.

It opens one SCUR credit-control session, then waits for Tollgate to send it a server-initiated
request on the same connection: a Re-Auth-Request (RFC 6733 §8.3.1, RFC 4006 §5.5, command 258)
or an Abort-Session-Request (RFC 6733 §8.5.1, command 274), both of the credit-control
application (4). It answers that request and carries on as a credit-control client does
(RFC 4006 §5.5): after a RAR it reports its usage with Reporting-Reason FORCED_REAUTHORISATION
(TS 32.299 §7.2.179) in a CCR-U; after an ASR it ends the session with a CCR-T. Every message
is encoded and decoded by python-diameter (PyPI `python-diameter`, import name `diameter`), so
what Tollgate sees was not produced by its own codec; the AVP flags follow the RFC 6733 /
RFC 4006 / TS 32.299 flag rules, as in ro_client.py.

Usage: ro_reauth.py HOST:PORT MODE ORIGIN_HOST [REQUEST_HEX_FILE]
  MODE              reauth | abort | reauth-5002
  ORIGIN_HOST       the client's Origin-Host (its realm is "test", as ro_client.py's); Tollgate
                    must address its request to it (Destination-Host)
  REQUEST_HEX_FILE  where to write the raw bytes of Tollgate's RAR or ASR, as one hex line
                    (for the caller's tshark check)

Flows, in order, over one connection:
  cer      CER/CEA                                                          -> 2001
  scur-i   CCR-I (number 0) MSCC{RSU{CC-Time 60}, Rating-Group 10}          -> 2001, GSU
  ready    {"step": "ready", "session_id": ..., "origin_host": ...} printed and flushed:
           the caller now makes Tollgate send its request
  rar|asr  up to 30 s for Tollgate's RAR or ASR (watchdog requests meanwhile get a DWA 2001);
           the first one must be a RAR (reauth, reauth-5002) or an ASR (abort) with the R bit,
           Application-Id 4, our Session-Id, Destination-Host ORIGIN_HOST, Auth-Application-Id
           4, Origin-Host, Origin-Realm, Destination-Realm, and in a RAR Re-Auth-Request-Type 0
           (AUTHORIZE_ONLY). Printed as {"step": "rar"|"asr", "command": N, "session_id": ...,
           "destination_host": ..., "re_auth_request_type": N (RAR only), "end_to_end": N,
           "hop_by_hop": N}
  raa|asa  the answer: same Hop-by-Hop and End-to-End ids, R bit clear, P bit copied,
           Session-Id, Result-Code 2001 (5002 DIAMETER_UNKNOWN_SESSION_ID in reauth-5002),
           Origin-Host, Origin-Realm. Printed as {"step": "raa"|"asa", "result_code": N}
  then, per MODE:
    reauth       scur-u  CCR-U (number 1) MSCC{USU{CC-Time 20, Reporting-Reason 7},
                         RSU{CC-Time 60}, Rating-Group 10}                   -> 2001, GSU
                 scur-t  CCR-T (number 2) MSCC{USU{CC-Time 10}, Rating-Group 10} -> 2001
    abort        scur-t  CCR-T (number 1) MSCC{USU{CC-Time 20}, Rating-Group 10} -> 2001
    reauth-5002  nothing more for the session
           (nothing either when the request was not the one MODE expects)
  dpr      DPR/DPA                                                          -> 2001

Prints one JSON object per answer or step on stdout ({"step": ..., "result_code": N, ...}) and
a summary line ({"step": "summary", "mode": ..., "session_id": ..., "ccas": N, "watchdogs": N,
"failures": N}), and exits 0 only if every expectation held; otherwise it lists the failed
expectations on stderr and exits 1 (2 on a transport or decoding failure, or when no RAR or
ASR came within 30 s; 3 without python-diameter; 64 on a usage error). When the CCR-I is
refused there is no session to re-authorise: no ready line, straight to DPR, exit 1.
"""

import json
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
    CMD_DWR,
    FLAG_P,
    FLAG_R,
    ORIGIN_HOST_AVP,
    ORIGIN_REALM_AVP,
    RESULT_CODE,
    SESSION_ID,
    STEP_FAILURES,
    TIMEOUT_S,
    Client,
    MessageHeader,
    ProtocolFailure,
    Message,
    base_avp,
    expect,
    print_failures,
    request,
    value_of,
)
from ro_client import (  # noqa: E402  (the same subscriber, service and AVP flag rule)
    INITIAL,
    ORIGIN_REALM,
    SUBSCRIBER,
    TERMINATION,
    UPDATE,
    RoClient,
    avp,
    ccr_head,
    describe_mscc,
    granted,
    mscc_for,
)
from diameter.message.constants import (  # noqa: E402
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_TIME,
    AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM,
    AVP_HOST_IP_ADDRESS,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_MULTIPLE_SERVICES_INDICATOR,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RE_AUTH_REQUEST_TYPE,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_TERMINATION_CAUSE,
    AVP_VENDOR_ID,
    VENDOR_TGPP,
)

USAGE = "ro_reauth.py HOST:PORT MODE ORIGIN_HOST [REQUEST_HEX_FILE]   (MODE: reauth | abort | reauth-5002)"

# Server-initiated requests (RFC 6733 §3.1) and how this client names them and their answers.
CMD_RAR, CMD_ASR = 258, 274
STEPS = {CMD_RAR: ("rar", "raa"), CMD_ASR: ("asr", "asa")}

# MODE -> (the request Tollgate must send, the Result-Code of our answer).
MODES = {
    "reauth": (CMD_RAR, 2001),
    "abort": (CMD_ASR, 2001),
    "reauth-5002": (CMD_RAR, 5002),  # DIAMETER_UNKNOWN_SESSION_ID (RFC 6733 §7.1.5)
}

# How long Tollgate has to send its RAR or ASR after the ready line.
WAIT_S = 30.0

AUTHORIZE_ONLY = 0  # Re-Auth-Request-Type (RFC 6733 §8.12)
FORCED_REAUTHORISATION = 7  # Reporting-Reason (TS 32.299 §7.2.179)
DIAMETER_LOGOUT, DIAMETER_ADMINISTRATIVE = 1, 4  # Termination-Cause (RFC 6733 §8.15)
RATING_GROUP = 10


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


class ReauthClient(Client):
    def __init__(self, addr, mode, origin_host):
        super().__init__(addr, None, origin_host, ORIGIN_REALM)  # no CCA file: ask, not ask_recorded
        self.mode = mode
        self.server_host = None
        self.origin_state = int(time.time()) & 0xFFFFFFFF
        self.session = f"{origin_host};{int(time.time())};{random.getrandbits(32)}"
        self.watchdogs = 0
        self.server_request_raw = None

    # --- message builders ---------------------------------------------------------------

    def ccr(self, kind, number, body):
        """A CCR of our session, shaped as ro_client.py's."""
        avps = ccr_head(
            self.origin_host, self.origin_realm, self.server_host, self.origin_state, self.session, kind, number
        )
        avps.append(RoClient.subscription(SUBSCRIBER))
        avps.extend(body)
        return request(CMD_CCR, APP_CC, FLAG_R | FLAG_P, avps, self.ids)

    # --- exchanges ----------------------------------------------------------------------

    def cer(self):
        avps = [
            avp(AVP_ORIGIN_HOST, self.origin_host.encode()),
            avp(AVP_ORIGIN_REALM, self.origin_realm.encode()),
            avp(AVP_HOST_IP_ADDRESS, self.conn.local_ip),
            avp(AVP_VENDOR_ID, 0),
            avp(AVP_PRODUCT_NAME, "tollgate-ro-reauth (python-diameter)"),
            avp(AVP_ORIGIN_STATE_ID, self.origin_state),
            avp(AVP_SUPPORTED_VENDOR_ID, VENDOR_TGPP),
            avp(AVP_AUTH_APPLICATION_ID, APP_CC),
        ]
        self.exchange_capabilities(avps)

    def ask_cc(self, step, req, expect_code=2001):
        """Sends a CCR, prints and checks its CCA (RFC 4006 §3.2), returns (line, MSCCs)."""
        ans, _ = self.conn.ask(req)
        self.ccas += 1
        avps = ans.avps
        msccs = [a for a in avps if a.code == AVP_MULTIPLE_SERVICES_CREDIT_CONTROL and a.vendor_id == 0]
        info = {}
        if msccs:
            info["mscc"] = [describe_mscc(m) for m in msccs]
        number = value_of(avps, AVP_CC_REQUEST_NUMBER)
        if number is not None:
            info["cc_request_number"] = number
        info["session_id"] = _text(value_of(avps, AVP_SESSION_ID))
        line = self.report(step, ans, **info)
        self.expect_cca(step, req, ans, expect_code)
        if self.server_host is None:
            self.server_host = value_of(avps, AVP_ORIGIN_HOST)
        return line, msccs

    def expect_gsu(self, step, msccs, positive):
        m = mscc_for(msccs, RATING_GROUP)
        expect(step, f"an MSCC for rating group {RATING_GROUP}", m is not None)
        if m is None:
            return
        g = granted(m)
        ok = g is not None and g[0] == "cc_time" and (not positive or (g[1] or 0) > 0)
        expect(step, f"a GSU in CC-Time (got {g})", ok)
        got = value_of(m.value, AVP_RESULT_CODE)
        expect(step, f"MSCC Result-Code 2001 (got {got})", got in (None, 2001))

    def flows(self):
        summary = {"mode": self.mode, "session_id": self.session}
        if not self.ccr_i():
            return summary  # no session: nothing for Tollgate to re-authorise or abort
        print(json.dumps({"step": "ready", "session_id": self.session, "origin_host": self.origin_host}), flush=True)
        req = self.wait_for_server_request()
        if not self.answer(req):
            return summary  # not the request MODE expects: leave the session alone
        if self.mode == "reauth":
            self.ccr_u_forced(1)
            self.ccr_t("scur-t", 2, 10, DIAMETER_LOGOUT)
        elif self.mode == "abort":
            # RFC 4006 §5.5: after a successful ASA the client ends the session with a CCR-T.
            self.ccr_t("scur-t", 1, 20, DIAMETER_ADMINISTRATIVE)
        return summary

    def ccr_i(self):
        req = self.ccr(
            INITIAL,
            0,
            [
                avp(AVP_MULTIPLE_SERVICES_INDICATOR, 1),
                RoClient.mscc(rsu=[avp(AVP_CC_TIME, 60)], rating_group=RATING_GROUP),
            ],
        )
        line, msccs = self.ask_cc("scur-i", req)
        self.expect_gsu("scur-i", msccs, positive=True)
        return line["result_code"] == 2001

    def ccr_u_forced(self, number):
        """Usage so far, reported because the server forced a re-authorisation (RFC 4006 §5.5,
        TS 32.299 §7.2.179: Reporting-Reason inside Used-Service-Unit), and a new request."""
        req = self.ccr(
            UPDATE,
            number,
            [
                RoClient.mscc(
                    rsu=[avp(AVP_CC_TIME, 60)],
                    usu=[avp(AVP_CC_TIME, 20)],
                    rating_group=RATING_GROUP,
                    reporting_reason=FORCED_REAUTHORISATION,
                ),
            ],
        )
        _, msccs = self.ask_cc("scur-u", req)
        self.expect_gsu("scur-u", msccs, positive=False)

    def ccr_t(self, step, number, used_s, cause):
        req = self.ccr(
            TERMINATION,
            number,
            [
                avp(AVP_TERMINATION_CAUSE, cause),
                RoClient.mscc(usu=[avp(AVP_CC_TIME, used_s)], rating_group=RATING_GROUP),
            ],
        )
        self.ask_cc(step, req)

    # --- the server's request -------------------------------------------------------------

    def wait_for_server_request(self):
        """Reads until Tollgate's first RAR or ASR, within WAIT_S; answers watchdog requests
        meanwhile. Anything else (an answer, another request) breaks the exchange."""
        conn = self.conn
        deadline = time.monotonic() + WAIT_S
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProtocolFailure(f"no Re-Auth or Abort-Session request from Tollgate within {WAIT_S:.0f} s")
                conn.sock.settimeout(left)
                try:
                    msg, raw = conn.read_message()
                except ProtocolFailure:
                    if time.monotonic() >= deadline:
                        raise ProtocolFailure(
                            f"no Re-Auth or Abort-Session request from Tollgate within {WAIT_S:.0f} s"
                        ) from None
                    raise
                h = msg.header
                if not h.is_request:
                    raise ProtocolFailure(
                        f"unsolicited answer (command {h.command_code}, Hop-by-Hop "
                        f"0x{h.hop_by_hop_identifier:08x}) while waiting for a RAR or ASR"
                    )
                if h.command_code == CMD_DWR:
                    conn._answer_watchdog(msg)  # DWA 2001 with our Origin-Host and Origin-Realm
                    self.watchdogs += 1
                    continue
                if h.command_code in STEPS:
                    self.server_request_raw = raw
                    return msg
                raise ProtocolFailure(f"unexpected request {h.command_code} from Tollgate while waiting for a RAR or ASR")
        finally:
            conn.sock.settimeout(TIMEOUT_S)

    def answer(self, req):
        """Checks Tollgate's RAR or ASR, prints it, answers it and prints the answer. Returns
        whether it was the request MODE expects."""
        h, avps = req.header, req.avps
        cmd = h.command_code
        step, answer_step = STEPS[cmd]
        want_cmd, result_code = MODES[self.mode]
        expect(step, f"command {want_cmd} in mode {self.mode}, got {cmd}", cmd == want_cmd)
        expect(step, "the R bit", h.is_request)
        expect(step, "no E bit in a request", not h.is_error)
        expect(step, f"Application-Id {APP_CC} in the header, got {h.application_id}", h.application_id == APP_CC)

        sid = _text(value_of(avps, AVP_SESSION_ID))
        expect(step, f"Session-Id {self.session!r}, got {sid!r}", sid == self.session)
        dest = _text(value_of(avps, AVP_DESTINATION_HOST))
        expect(step, f"Destination-Host {self.origin_host!r}, got {dest!r}", dest == self.origin_host)
        app = value_of(avps, AVP_AUTH_APPLICATION_ID)
        expect(step, f"Auth-Application-Id {APP_CC}, got {app}", app == APP_CC)
        for code, name in (
            (AVP_ORIGIN_HOST, "Origin-Host"),
            (AVP_ORIGIN_REALM, "Origin-Realm"),
            (AVP_DESTINATION_REALM, "Destination-Realm"),
        ):
            expect(step, name, bool(_text(value_of(avps, code))))
        line = {"step": step, "command": cmd, "session_id": sid, "destination_host": dest}
        if cmd == CMD_RAR:
            rat = value_of(avps, AVP_RE_AUTH_REQUEST_TYPE)
            expect(step, f"Re-Auth-Request-Type {AUTHORIZE_ONLY} AUTHORIZE_ONLY, got {rat}", rat == AUTHORIZE_ONLY)
            line["re_auth_request_type"] = rat
        line["end_to_end"] = h.end_to_end_identifier
        line["hop_by_hop"] = h.hop_by_hop_identifier
        print(json.dumps(line), flush=True)

        # RFC 6733 §3: the answer keeps both identifiers, clears R and keeps P; its Session-Id
        # comes first (§8.3.2, §8.5.2).
        hdr = MessageHeader(
            version=1,
            command_flags=FLAG_P if h.is_proxyable else 0,
            command_code=cmd,
            application_id=h.application_id,
            hop_by_hop_identifier=h.hop_by_hop_identifier,
            end_to_end_identifier=h.end_to_end_identifier,
        )
        answer = [
            base_avp(SESSION_ID, sid if sid else self.session),
            base_avp(RESULT_CODE, result_code),
            base_avp(ORIGIN_HOST_AVP, self.origin_host.encode()),
            base_avp(ORIGIN_REALM_AVP, self.origin_realm.encode()),
        ]
        self.conn.send(Message(hdr, answer))
        print(json.dumps({"step": answer_step, "result_code": result_code}), flush=True)
        return cmd == want_cmd


def main(argv):
    if len(argv) not in (4, 5) or ":" not in argv[1] or argv[2] not in MODES or not argv[3]:
        print(f"usage: {USAGE}", file=sys.stderr)
        return 64
    try:
        client = ReauthClient(argv[1], argv[2], argv[3])
        client.cer()
        summary = client.flows()
        client.dpr()
        if len(argv) == 5 and client.server_request_raw is not None:
            with open(argv[4], "w") as f:
                f.write(client.server_request_raw.hex() + "\n")
    except (ProtocolFailure, OSError) as e:
        print_failures()
        print(f"FAIL transport: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "step": "summary",
                **summary,
                "ccas": client.ccas,
                "watchdogs": client.watchdogs,
                "failures": len(STEP_FAILURES),
            }
        ),
        flush=True,
    )
    if STEP_FAILURES:
        print_failures()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
