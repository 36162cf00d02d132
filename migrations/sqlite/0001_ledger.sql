-- Tollgate ledger schema, SQLite (the embedded store). Same tables, columns and views as
-- migrations/postgres/0001_ledger.sql; JSON is TEXT. Append-only.

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    currency      TEXT NOT NULL CONSTRAINT accounts_currency_iso CHECK (length(currency) = 3 AND currency = upper(currency)),
    scale         INTEGER NOT NULL CONSTRAINT accounts_scale_range CHECK (scale BETWEEN 0 AND 6),
    credit_limit  INTEGER NOT NULL DEFAULT 0 CONSTRAINT accounts_credit_limit_nonneg CHECK (credit_limit >= 0),
    status        TEXT NOT NULL DEFAULT 'active' CONSTRAINT accounts_status_known CHECK (status IN ('active', 'blocked', 'closed')),
    balance       INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    sub_type   INTEGER NOT NULL CONSTRAINT subscriptions_type_range CHECK (sub_type BETWEEN 0 AND 4),
    sub_data   TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (sub_type, sub_data)
);
CREATE INDEX subscriptions_account ON subscriptions (account_id);

CREATE TABLE allowances (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    unit           TEXT NOT NULL CONSTRAINT allowances_unit_known CHECK (unit IN ('seconds', 'octets', 'units', 'money')),
    valid_until_ms INTEGER NOT NULL,
    remaining      INTEGER NOT NULL DEFAULT 0,
    reserved       INTEGER NOT NULL DEFAULT 0,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX allowances_account ON allowances (account_id);

CREATE TABLE tariffs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    service_context TEXT NOT NULL,
    rating_group    INTEGER,
    service_id      INTEGER,
    unit            TEXT NOT NULL CONSTRAINT tariffs_unit_known CHECK (unit IN ('seconds', 'octets', 'units', 'money')),
    currency        TEXT NOT NULL,
    price_minor     INTEGER NOT NULL CONSTRAINT tariffs_price_nonneg CHECK (price_minor >= 0),
    price_per_units INTEGER NOT NULL CONSTRAINT tariffs_per_positive CHECK (price_per_units > 0),
    quantum         INTEGER NOT NULL CONSTRAINT tariffs_quantum_positive CHECK (quantum > 0),
    min_grant       INTEGER NOT NULL DEFAULT 0 CONSTRAINT tariffs_min_grant_nonneg CHECK (min_grant >= 0),
    updated_at_ms   INTEGER NOT NULL
);
CREATE UNIQUE INDEX tariffs_key ON tariffs (service_context, COALESCE(rating_group, -1), COALESCE(service_id, -1), unit);

CREATE TABLE reservations (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    session_ref     TEXT NOT NULL,
    service_context TEXT NOT NULL,
    rating_group    INTEGER,
    service_id      INTEGER,
    unit            TEXT NOT NULL,
    granted_units   INTEGER NOT NULL,
    allowance_id    INTEGER REFERENCES allowances (id),
    allowance_units INTEGER NOT NULL DEFAULT 0,
    pending_amount  INTEGER NOT NULL CONSTRAINT reservations_pending_nonneg CHECK (pending_amount >= 0),
    price_minor     INTEGER NOT NULL,
    price_per_units INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    status          TEXT NOT NULL CONSTRAINT reservations_status_known CHECK (status IN ('open', 'posted', 'voided', 'expired')),
    used_units      INTEGER,
    charged         INTEGER,
    session_used    INTEGER NOT NULL DEFAULT 0,
    session_charged INTEGER NOT NULL DEFAULT 0,
    request_key     TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    resolved_at_ms  INTEGER
);
CREATE UNIQUE INDEX reservations_one_open ON reservations
    (session_ref, service_context, COALESCE(rating_group, -1), COALESCE(service_id, -1)) WHERE status = 'open';
CREATE INDEX reservations_session ON reservations (session_ref);
CREATE INDEX reservations_expiry ON reservations (expires_at_ms) WHERE status = 'open';

CREATE TABLE ledger_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    kind           TEXT NOT NULL CONSTRAINT ledger_entries_kind_known CHECK
                       (kind IN ('pending', 'post', 'void', 'expire', 'direct_debit', 'refund', 'topup')),
    amount         INTEGER NOT NULL DEFAULT 0,
    pending_delta  INTEGER NOT NULL DEFAULT 0,
    allowance_id   INTEGER REFERENCES allowances (id),
    units          INTEGER NOT NULL DEFAULT 0,
    pending_units  INTEGER NOT NULL DEFAULT 0,
    reservation_id TEXT REFERENCES reservations (id),
    used_units     INTEGER,
    unbilled       INTEGER NOT NULL DEFAULT 0,
    request_key    TEXT,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_reservation ON ledger_entries (reservation_id);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries are immutable; write a correcting entry instead'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries are immutable; write a correcting entry instead'); END;

CREATE TABLE idempotency_keys (
    request_key   TEXT PRIMARY KEY,
    op            TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    account_id    TEXT REFERENCES accounts (id),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE charging_records (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL CONSTRAINT charging_records_kind_known CHECK (kind IN ('session', 'event')),
    session_ref     TEXT NOT NULL,
    service_context TEXT NOT NULL,
    rating_group    INTEGER,
    service_id      INTEGER,
    unit            TEXT NOT NULL,
    used_units      INTEGER NOT NULL,
    charged         INTEGER NOT NULL,
    request_key     TEXT NOT NULL,
    payload         TEXT,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX charging_records_account ON charging_records (account_id, id);

CREATE VIEW v_balances AS
SELECT a.id AS account_id, a.currency, a.scale, a.status, a.credit_limit,
       a.balance, a.reserved, a.balance - a.reserved + a.credit_limit AS available,
       COALESCE(e.sum_amount, 0) AS entries_balance, COALESCE(e.sum_pending, 0) AS entries_reserved
FROM accounts a
LEFT JOIN (SELECT account_id, SUM(amount) AS sum_amount, SUM(pending_delta) AS sum_pending
           FROM ledger_entries GROUP BY account_id) e ON e.account_id = a.id;

CREATE VIEW v_open_reservations AS
SELECT r.id AS reservation_id, r.account_id, r.session_ref, r.service_context, r.rating_group, r.service_id,
       r.unit, r.granted_units, r.allowance_units, r.pending_amount, r.expires_at_ms, r.created_at_ms
FROM reservations r WHERE r.status = 'open';

CREATE VIEW v_entries AS
SELECT e.id AS entry_id, e.account_id, a.currency, a.scale, e.kind, e.amount, e.pending_delta,
       e.allowance_id, e.units, e.pending_units, e.reservation_id, r.session_ref, e.used_units, e.unbilled,
       e.request_key, e.created_at_ms
FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
LEFT JOIN reservations r ON r.id = e.reservation_id;

CREATE VIEW v_charging_records AS
SELECT c.id AS record_id, c.account_id, a.currency, a.scale, c.kind, c.session_ref, c.service_context,
       c.rating_group, c.service_id, c.unit, c.used_units, c.charged, c.request_key, c.payload, c.created_at_ms
FROM charging_records c JOIN accounts a ON a.id = c.account_id;
