-- Tollgate ledger, PostgreSQL: the group-commit batch is no longer applied by PL/pgSQL.
--
-- Migration 0002's functions applied a batch op by op, about 13 statements per reserve + commit
-- pair; what a statement costs in PostgreSQL (executor start-up, constraint expressions, the
-- PL/pgSQL interpreter) made that the ledger's bottleneck. A batch now locks its accounts, reads
-- what it needs with one statement per kind of row, decides in the ledger process
-- (crates/tollgate-ledger/src/pg_batch.rs, the semantics of ops.rs) and writes every row in ONE
-- statement. Nothing calls these functions any more; an unused copy of the ledger's rules in the
-- database would only drift from the one that runs. No table, column, view or grant changes.
-- Append-only: never edit 0002 or 0003.

DROP FUNCTION tollgate_apply_batch(BIGINT, JSONB);
DROP FUNCTION tollgate_apply_op(BIGINT, JSONB);
DROP FUNCTION tollgate_op_refund(BIGINT, JSONB);
DROP FUNCTION tollgate_op_direct_debit(BIGINT, JSONB);
DROP FUNCTION tollgate_op_release(BIGINT, JSONB);
DROP FUNCTION tollgate_op_commit(BIGINT, JSONB);
DROP FUNCTION tollgate_op_reserve(BIGINT, JSONB);
DROP FUNCTION tollgate_open_reservation(BIGINT, accounts, TEXT, BIGINT, BIGINT, TEXT, NUMERIC, TEXT,
    BIGINT, TEXT, TEXT, BIGINT, BIGINT);
DROP FUNCTION tollgate_amount_for(NUMERIC, BIGINT, BIGINT);
DROP FUNCTION tollgate_tariff(TEXT, TEXT, TEXT, BIGINT, BIGINT);
