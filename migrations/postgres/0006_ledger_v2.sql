-- Tollgate ledger v2, PostgreSQL: about one inserted row per CCR (docs/ledger.md, "Tables").
--
-- v1 wrote, for every CCR-U, a new reservation row, an update of the one it resolved (neither
-- HOT: `status` and `expires_at_ms` are indexed), a post entry, a pending entry and an
-- idempotency row, each with its index entries and foreign-key checks: ~17 WAL records per CCR
-- (scripts/bench-e2e). v2 keeps the same money and the same auditor views on three ideas:
--
-- * `journal`: one append-only row per operation (per CCR per rating group) under ONE unique
--   key, (request_key, part). Part 0 carries the stored answer (what v1's idempotency_keys
--   held) and the operation's first ledger entry; a commit that also opens the next grant
--   carries that grant's pending entry on the same row (`hold_*`). A release of several
--   rating groups adds parts 1, 2, ... Every ledger entry keeps an `entry_id` from one
--   sequence, so `v_entries` lists the same entries, in the same order, as v1 did.
-- * `session_credits`: one MUTABLE row per open session credit (a session's reservation of
--   one service). A CCR-U updates it in place; none of the columns a CCR-U changes is indexed
--   and the table leaves half of each page free, so PostgreSQL can do it as a HOT update
--   (no new index entries). The row is deleted when the session credit ends; its history is
--   the journal.
-- * `charging_records` is unchanged: written once, at session end (or per event).
--
-- Foreign keys: none on journal, session_credits or charging_records. The engine
-- (crates/tollgate-ocs/src/engine) only names accounts it holds locked, `ledger verify`
-- reports any entry naming a missing account, and the tests hold both to that. Tables written
-- rarely (subscriptions, allowances) keep theirs.
--
-- Data already in a v1 ledger is carried over: every stored answer and every entry becomes a
-- journal row (entries keep their ids), open reservations become session credits, and v1's
-- reservation table is kept, renamed `reservations_v1`, as the history of the reservations
-- resolved before the migration. Append-only: never edit 0001-0005.

CREATE SEQUENCE ledger_entry_ids;
SELECT setval('ledger_entry_ids', COALESCE((SELECT max(id) FROM ledger_entries), 0) + 1, false);

CREATE TABLE journal (
    request_key         TEXT NOT NULL,
    part                SMALLINT NOT NULL,
    op                  TEXT NOT NULL,
    fingerprint         TEXT,
    outcome             TEXT,
    account_id          TEXT,
    session_ref         TEXT,
    entry_id            BIGINT,
    kind                TEXT CONSTRAINT journal_kind_known CHECK
                            (kind IN ('pending', 'post', 'void', 'expire', 'direct_debit', 'refund', 'topup')),
    amount              BIGINT NOT NULL DEFAULT 0,
    pending_delta       BIGINT NOT NULL DEFAULT 0,
    allowance_id        BIGINT,
    units               BIGINT NOT NULL DEFAULT 0,
    pending_units       BIGINT NOT NULL DEFAULT 0,
    reservation_id      TEXT,
    used_units          BIGINT,
    unbilled            BIGINT NOT NULL DEFAULT 0,
    hold_entry_id       BIGINT,
    hold_reservation_id TEXT,
    hold_amount         BIGINT NOT NULL DEFAULT 0,
    hold_allowance_id   BIGINT,
    hold_units          BIGINT NOT NULL DEFAULT 0,
    created_at_ms       BIGINT NOT NULL,
    PRIMARY KEY (request_key, part)
);

-- Journal rows are immutable, as ledger entries were: corrections are new rows.
CREATE TRIGGER journal_no_update BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();

CREATE TABLE session_credits (
    credit_id       TEXT NOT NULL,
    reservation_id  TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    session_ref     TEXT NOT NULL,
    service_context TEXT NOT NULL,
    rating_group    BIGINT,
    service_id      BIGINT,
    unit            TEXT NOT NULL,
    granted_units   BIGINT NOT NULL,
    allowance_id    BIGINT,
    allowance_units BIGINT NOT NULL,
    pending_amount  BIGINT NOT NULL,
    price_minor     BIGINT NOT NULL,
    price_per_units BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    session_used    BIGINT NOT NULL,
    session_charged BIGINT NOT NULL,
    request_key     TEXT NOT NULL,
    opened_at_ms    BIGINT NOT NULL,
    granted_at_ms   BIGINT NOT NULL
) WITH (fillfactor = 50);
-- The only index: a session's credit per service, which is also how a batch finds its
-- sessions' credits (by session_ref, its prefix). The sweeper's "expired" query scans the
-- table, which holds only open credits; an index on expires_at_ms would make every CCR-U a
-- non-HOT update.
CREATE UNIQUE INDEX session_credits_one_per_service ON session_credits
    (session_ref, service_context, COALESCE(rating_group, -1), COALESCE(service_id, -1));

-- Carry v1 over. Stored answers first (part 0, no entry) ...
INSERT INTO journal (request_key, part, op, fingerprint, outcome, account_id, created_at_ms)
SELECT request_key, 0, op, fingerprint, CAST(outcome AS TEXT), account_id, created_at_ms
FROM idempotency_keys;

-- ... then every entry on a row of its own after them, keeping its id; entries without a
-- request key (expiries, top-ups) get a key of their own, which no request key can take
-- (request keys start with a digit, docs/ledger.md "Idempotency").
INSERT INTO journal (request_key, part, op, account_id, session_ref, entry_id, kind, amount,
    pending_delta, allowance_id, units, pending_units, reservation_id, used_units, unbilled,
    created_at_ms)
SELECT COALESCE(e.request_key, '~v1-entry:' || e.id),
       CASE WHEN e.request_key IS NULL THEN 0
            ELSE row_number() OVER (PARTITION BY e.request_key ORDER BY e.id) END,
       COALESCE(i.op, e.kind), e.account_id, r.session_ref, e.id, e.kind, e.amount,
       e.pending_delta, e.allowance_id, e.units, e.pending_units, e.reservation_id, e.used_units,
       e.unbilled, e.created_at_ms
FROM ledger_entries e
LEFT JOIN reservations r ON r.id = e.reservation_id
LEFT JOIN idempotency_keys i ON i.request_key = e.request_key;

INSERT INTO session_credits (credit_id, reservation_id, account_id, session_ref, service_context,
    rating_group, service_id, unit, granted_units, allowance_id, allowance_units, pending_amount,
    price_minor, price_per_units, expires_at_ms, session_used, session_charged, request_key,
    opened_at_ms, granted_at_ms)
SELECT first.id, r.id, r.account_id, r.session_ref, r.service_context, r.rating_group,
       r.service_id, r.unit, r.granted_units, r.allowance_id, r.allowance_units, r.pending_amount,
       r.price_minor, r.price_per_units, r.expires_at_ms, r.session_used, r.session_charged,
       r.request_key, first.created_at_ms, r.created_at_ms
FROM reservations r
-- A credit is named after its first reservation: the session's earliest for that service.
JOIN reservations first ON first.id = (
    SELECT f.id FROM reservations f
    WHERE f.session_ref = r.session_ref AND f.service_context = r.service_context
      AND COALESCE(f.rating_group, -1) = COALESCE(r.rating_group, -1)
      AND COALESCE(f.service_id, -1) = COALESCE(r.service_id, -1)
    ORDER BY f.created_at_ms, f.id LIMIT 1)
WHERE r.status = 'open';

DROP VIEW v_entries;
DROP VIEW v_open_reservations;
DROP VIEW v_balances;
DROP TABLE ledger_entries;
DROP TABLE idempotency_keys;
ALTER TABLE reservations RENAME TO reservations_v1;
ALTER TABLE charging_records DROP CONSTRAINT charging_records_account_id_fkey;

-- Auditor views: v1's columns and meaning (docs/ledger.md, "Views"). A journal row holds up
-- to two entries: its own (`kind`) and the pending entry of the grant it opened (`hold_*`).
CREATE VIEW v_entries AS
SELECT e.entry_id, e.account_id, a.currency, a.scale, e.kind, e.amount, e.pending_delta,
       e.allowance_id, e.units, e.pending_units, e.reservation_id, e.session_ref, e.used_units,
       e.unbilled, e.request_key, e.created_at_ms
FROM (
    SELECT j.entry_id, j.account_id, j.kind, j.amount, j.pending_delta, j.allowance_id, j.units,
           j.pending_units, j.reservation_id, j.session_ref, j.used_units, j.unbilled,
           CASE WHEN j.request_key LIKE '~%' THEN NULL ELSE j.request_key END AS request_key,
           j.created_at_ms
    FROM journal j WHERE j.kind IS NOT NULL
    UNION ALL
    SELECT j.hold_entry_id, j.account_id, 'pending', 0, j.hold_amount, j.hold_allowance_id, 0,
           j.hold_units, j.hold_reservation_id, j.session_ref, NULL, 0,
           CASE WHEN j.request_key LIKE '~%' THEN NULL ELSE j.request_key END, j.created_at_ms
    FROM journal j WHERE j.hold_entry_id IS NOT NULL
) e JOIN accounts a ON a.id = e.account_id;

CREATE VIEW v_balances AS
SELECT a.id AS account_id, a.currency, a.scale, a.status, a.credit_limit,
       a.balance, a.reserved, a.balance - a.reserved + a.credit_limit AS available,
       COALESCE(e.sum_amount, 0) AS entries_balance, COALESCE(e.sum_pending, 0) AS entries_reserved
FROM accounts a
LEFT JOIN (SELECT account_id, SUM(amount) AS sum_amount, SUM(pending_delta + hold_amount) AS sum_pending
           FROM journal GROUP BY account_id) e ON e.account_id = a.id;

CREATE VIEW v_open_reservations AS
SELECT c.reservation_id, c.account_id, c.session_ref, c.service_context, c.rating_group,
       c.service_id, c.unit, c.granted_units, c.allowance_units, c.pending_amount, c.expires_at_ms,
       c.granted_at_ms AS created_at_ms, c.credit_id, c.session_used, c.session_charged
FROM session_credits c;

GRANT SELECT ON journal, session_credits, v_entries, v_balances, v_open_reservations
    TO tollgate_auditor;
