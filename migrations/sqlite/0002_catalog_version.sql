-- Tollgate ledger, embedded store (SQLite): a version number for what the ledger process
-- caches (the tariffs and the Subscription-Id -> account map, crates/tollgate-ledger/src/catalog.rs).
-- Any change to either table, by `tollgate serve` or by the CLI in another process, bumps it in
-- the same transaction (triggers below), and every batch reads it first and reloads what it
-- cached when it moved. Append-only: never edit 0001.

CREATE TABLE catalog_version (
    id      INTEGER PRIMARY KEY CONSTRAINT catalog_version_one_row CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 1);

CREATE TRIGGER tariffs_bump_on_insert AFTER INSERT ON tariffs
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tariffs_bump_on_update AFTER UPDATE ON tariffs
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tariffs_bump_on_delete AFTER DELETE ON tariffs
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_bump_on_insert AFTER INSERT ON subscriptions
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_bump_on_update AFTER UPDATE ON subscriptions
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER subscriptions_bump_on_delete AFTER DELETE ON subscriptions
BEGIN UPDATE catalog_version SET version = version + 1 WHERE id = 1; END;
