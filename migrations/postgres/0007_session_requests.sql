-- Requests the OCS sends first (RFC 4006 §5.5 Re-Auth-Request, RFC 6733 §8.5
-- Abort-Session-Request), as an outbox in the ledger.
--
-- Whoever wants a session re-authorised or aborted (the CLI, a top-up, any node) writes a row;
-- the node that has the session's client connected claims it (a lease: `claimed_by`,
-- `claimed_until_ms`), sends the RAR or ASR over that connection, and records the answer. So a
-- request survives a crash (the lease runs out and another attempt is made), works from any
-- node, and is visible to an auditor. docs/several-nodes.md, "Requests the OCS sends first".
--
-- `peer_host` is the Origin-Host of the session's client when the row was written: the
-- Destination-Host of the RAR/ASR and the peer it must go to (RFC 4006 §5.5: to the node
-- that sent the CCRs).

CREATE TABLE session_requests (
    id                 BIGSERIAL PRIMARY KEY,
    kind               TEXT NOT NULL CONSTRAINT session_requests_kind CHECK (kind IN ('reauth', 'abort')),
    session_id         TEXT NOT NULL,
    peer_host          TEXT NOT NULL,
    reason             TEXT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'queued'
                           CONSTRAINT session_requests_state CHECK (state IN ('queued', 'answered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    claimed_by         TEXT,
    claimed_until_ms   BIGINT,
    result_code        BIGINT,
    detail             TEXT,
    created_at_ms      BIGINT NOT NULL,
    finished_at_ms     BIGINT
);
CREATE INDEX session_requests_queued ON session_requests (next_attempt_at_ms) WHERE state = 'queued';

-- Open sessions and the client each one belongs to: the Origin-Host is the first field of the
-- stored request key (`<length>:<Origin-Host>|…`, crates/tollgate-ocs/src/ledger.rs).
CREATE VIEW v_open_sessions AS
SELECT c.session_ref AS session_id,
       min(c.account_id) AS account_id,
       min(substr(c.request_key, strpos(c.request_key, ':') + 1,
                  CAST(split_part(c.request_key, ':', 1) AS INTEGER))) AS peer_host,
       count(*) AS credits,
       CAST(sum(c.pending_amount) AS BIGINT) AS pending_amount,
       min(c.opened_at_ms) AS opened_at_ms,
       max(c.expires_at_ms) AS expires_at_ms
FROM session_credits c
GROUP BY c.session_ref;

GRANT SELECT ON session_requests, v_open_sessions TO tollgate_auditor;
