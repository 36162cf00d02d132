-- Requests the OCS sends first (RAR, ASR) as an outbox in the ledger; see
-- migrations/postgres/0007_session_requests.sql for the design.

CREATE TABLE session_requests (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT NOT NULL CHECK (kind IN ('reauth', 'abort')),
    session_id         TEXT NOT NULL,
    peer_host          TEXT NOT NULL,
    reason             TEXT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'answered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    claimed_by         TEXT,
    claimed_until_ms   INTEGER,
    result_code        INTEGER,
    detail             TEXT,
    created_at_ms      INTEGER NOT NULL,
    finished_at_ms     INTEGER
);
CREATE INDEX session_requests_queued ON session_requests (next_attempt_at_ms) WHERE state = 'queued';

CREATE VIEW v_open_sessions AS
SELECT c.session_ref AS session_id,
       min(c.account_id) AS account_id,
       min(substr(c.request_key, instr(c.request_key, ':') + 1,
                  CAST(substr(c.request_key, 1, instr(c.request_key, ':') - 1) AS INTEGER))) AS peer_host,
       count(*) AS credits,
       sum(c.pending_amount) AS pending_amount,
       min(c.opened_at_ms) AS opened_at_ms,
       max(c.expires_at_ms) AS expires_at_ms
FROM session_credits c
GROUP BY c.session_ref;
