-- Tollgate ledger, PostgreSQL: a version number for what ledger processes cache.
--
-- Every `tollgate serve` keeps the tariffs and the Subscription-Id -> account map in memory
-- (crates/tollgate-ledger/src/catalog.rs) instead of reading them in every batch. Any change to
-- either table, by the CLI, another node or an operator's own SQL, bumps `catalog_version.version`
-- in the same transaction (statement triggers below), and every batch reads the version first
-- and reloads what it cached when it moved: a change is seen by every process before its next
-- batch. Append-only: never edit 0001-0004.

CREATE TABLE catalog_version (
    id      SMALLINT PRIMARY KEY CONSTRAINT catalog_version_one_row CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 1);

CREATE FUNCTION tollgate_bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$;

CREATE TRIGGER tariffs_bump_catalog_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tariffs
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_bump_catalog_version();
CREATE TRIGGER subscriptions_bump_catalog_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_bump_catalog_version();

GRANT SELECT ON catalog_version TO tollgate_auditor;
