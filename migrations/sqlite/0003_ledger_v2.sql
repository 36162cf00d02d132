-- Tollgate ledger v2, embedded store (SQLite): about one inserted row per CCR. The same
-- tables, carried-over data and views as migrations/postgres/0006_ledger_v2.sql, which says
-- why; what differs here: entry ids come from the one-row `ledger_counters` table (SQLite has
-- no sequences; every write holds the database's single write lock, BEGIN IMMEDIATE), and
-- charging_records keeps its foreign key (SQLite cannot drop one without rebuilding the
-- table, and it is checked once per session). Append-only: never edit 0001-0002.

CREATE TABLE ledger_counters (
    id            INTEGER PRIMARY KEY CONSTRAINT ledger_counters_one_row CHECK (id = 1),
    next_entry_id INTEGER NOT NULL
);
INSERT INTO ledger_counters (id, next_entry_id)
SELECT 1, COALESCE((SELECT max(id) FROM ledger_entries), 0) + 1;

CREATE TABLE journal (
    request_key         TEXT NOT NULL,
    part                INTEGER NOT NULL,
    op                  TEXT NOT NULL,
    fingerprint         TEXT,
    outcome             TEXT,
    account_id          TEXT,
    session_ref         TEXT,
    entry_id            INTEGER,
    kind                TEXT CONSTRAINT journal_kind_known CHECK
                            (kind IN ('pending', 'post', 'void', 'expire', 'direct_debit', 'refund', 'topup')),
    amount              INTEGER NOT NULL DEFAULT 0,
    pending_delta       INTEGER NOT NULL DEFAULT 0,
    allowance_id        INTEGER,
    units               INTEGER NOT NULL DEFAULT 0,
    pending_units       INTEGER NOT NULL DEFAULT 0,
    reservation_id      TEXT,
    used_units          INTEGER,
    unbilled            INTEGER NOT NULL DEFAULT 0,
    hold_entry_id       INTEGER,
    hold_reservation_id TEXT,
    hold_amount         INTEGER NOT NULL DEFAULT 0,
    hold_allowance_id   INTEGER,
    hold_units          INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    PRIMARY KEY (request_key, part)
);

CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal rows are immutable; write a correcting entry instead'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal rows are immutable; write a correcting entry instead'); END;

CREATE TABLE session_credits (
    credit_id       TEXT NOT NULL,
    reservation_id  TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    session_ref     TEXT NOT NULL,
    service_context TEXT NOT NULL,
    rating_group    INTEGER,
    service_id      INTEGER,
    unit            TEXT NOT NULL,
    granted_units   INTEGER NOT NULL,
    allowance_id    INTEGER,
    allowance_units INTEGER NOT NULL,
    pending_amount  INTEGER NOT NULL,
    price_minor     INTEGER NOT NULL,
    price_per_units INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    session_used    INTEGER NOT NULL,
    session_charged INTEGER NOT NULL,
    request_key     TEXT NOT NULL,
    opened_at_ms    INTEGER NOT NULL,
    granted_at_ms   INTEGER NOT NULL
);
CREATE UNIQUE INDEX session_credits_one_per_service ON session_credits
    (session_ref, service_context, COALESCE(rating_group, -1), COALESCE(service_id, -1));

INSERT INTO journal (request_key, part, op, fingerprint, outcome, account_id, created_at_ms)
SELECT request_key, 0, op, fingerprint, outcome, account_id, created_at_ms
FROM idempotency_keys;

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
