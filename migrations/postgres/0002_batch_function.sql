-- Tollgate ledger, PostgreSQL: apply a whole group-commit batch in ONE round trip.
--
-- `tollgate_apply_batch(now_ms, ops)` is called as a single autocommit statement by the batch
-- worker (crates/tollgate-ledger/src/pg_batch.rs builds `ops`). It locks every account the batch
-- will touch in id order, then applies each operation in arrival order with exactly the semantics
-- of crates/tollgate-ledger/src/ops.rs (the SQLite path and the naive baseline), and returns one
-- result per operation:
--   {"ok": <OpOutcome as serde JSON>}            the answer (also stored in idempotency_keys)
--   {"err": "changed"}                           changed duplicate (5004), nothing written
--   {"err": "open"}                              a reservation is already open, nothing written
--   {"err": "invalid", "reason": "..."}          invalid request, nothing written
-- Any SQL error aborts the whole statement (nothing stays); the caller then retries or runs each
-- operation alone so only the broken one fails. The conformance suite runs against both paths.
--
-- Arithmetic: the Rust rating uses i128 intermediates; NUMERIC is exact here, and values are
-- range-checked against 2^63-1 where Rust checks them, in the same order, so the same request
-- gets the same answer on both backends. Append-only: never edit this file, add 0003_*.

-- Writes: every entry is written in ONE statement together with the cached sums it changes
-- (accounts.balance/reserved, allowances.remaining/reserved) and the rows of the same step
-- (reservation, charging record), as data-modifying CTEs: the same rows ops.rs `Exec::entry`
-- writes, in fewer statements (each statement costs executor start-up and its own FK checks).

-- Tariff lookup: Service-Identifier match first, then Rating-Group, then context-wide
-- (ops.rs `Exec::tariff`, same statement). NULL when there is none.
CREATE FUNCTION tollgate_tariff(p_ctx TEXT, p_unit TEXT, p_currency TEXT, p_sid BIGINT, p_rg BIGINT)
RETURNS tariffs LANGUAGE plpgsql STABLE AS $$
DECLARE
    t tariffs;
BEGIN
    SELECT * INTO t FROM tariffs
    WHERE service_context = p_ctx AND unit = p_unit AND (p_currency IS NULL OR currency = p_currency)
      AND (service_id = p_sid OR (service_id IS NULL AND rating_group = p_rg)
           OR (service_id IS NULL AND rating_group IS NULL))
    ORDER BY CASE WHEN service_id IS NULL THEN 1 ELSE 0 END,
             CASE WHEN rating_group IS NULL THEN 1 ELSE 0 END
    LIMIT 1;
    RETURN t;
END $$;

-- Charge for `p_units` at minor/per, rounded up (tollgate_ocs `Price::amount_for`); NULL where
-- Rust answers None (non-positive per_units, result beyond i64).
CREATE FUNCTION tollgate_amount_for(p_units NUMERIC, p_minor BIGINT, p_per BIGINT)
RETURNS NUMERIC LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_per <= 0 THEN NULL
                WHEN div(p_units * p_minor + p_per - 1, p_per) > 9223372036854775807 THEN NULL
                ELSE div(p_units * p_minor + p_per - 1, p_per) END
$$;

-- Rate and open a reservation for a locked account; writes only when granted
-- (ops.rs `Exec::open_reservation` + tollgate_ocs `Tariff::plan_grant`).
-- Returns {"ok": ReserveOutcome} or {"err": "invalid", ...}.
CREATE FUNCTION tollgate_open_reservation(p_now BIGINT, a accounts, p_ctx TEXT, p_rg BIGINT,
    p_sid BIGINT, p_unit TEXT, p_requested NUMERIC, p_sref TEXT, p_expires BIGINT, p_key TEXT,
    p_id TEXT, p_s_used BIGINT, p_s_charged BIGINT)
RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    t tariffs;
    v_alw_id BIGINT;
    v_free_raw BIGINT;
    v_free NUMERIC;
    v_requested NUMERIC;
    v_alw_units NUMERIC;
    v_remaining NUMERIC;
    v_avail NUMERIC;
    v_affordable NUMERIC;
    v_money_units NUMERIC;
    v_amount NUMERIC;
    v_units NUMERIC;
    v_final BOOLEAN;
    v_alw BIGINT;
BEGIN
    IF p_requested IS NOT NULL AND p_requested > 9223372036854775807 THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'unit count beyond 2^63');
    END IF;
    IF a.status <> 'active' THEN
        RETURN '{"ok": {"Refused": "AccountBlocked"}}'::jsonb;
    END IF;
    -- tollgate_tariff, inlined on this hot path (one function call less per grant).
    SELECT * INTO t FROM tariffs
    WHERE service_context = p_ctx AND unit = p_unit AND currency = a.currency
      AND (service_id = p_sid OR (service_id IS NULL AND rating_group = p_rg)
           OR (service_id IS NULL AND rating_group IS NULL))
    ORDER BY CASE WHEN service_id IS NULL THEN 1 ELSE 0 END,
             CASE WHEN rating_group IS NULL THEN 1 ELSE 0 END
    LIMIT 1;
    IF t.id IS NULL THEN
        RETURN '{"ok": {"Refused": "NoTariff"}}'::jsonb;
    END IF;
    -- The allowance to draw on first: valid now, same unit, units left; soonest to lapse first.
    SELECT id, remaining - reserved INTO v_alw_id, v_free_raw FROM allowances
        WHERE account_id = a.id AND unit = p_unit AND valid_until_ms > p_now
          AND remaining - reserved > 0
        ORDER BY valid_until_ms, id LIMIT 1;
    v_free := GREATEST(COALESCE(v_free_raw, 0), 0);
    -- plan_grant
    v_requested := COALESCE(p_requested, GREATEST(t.quantum, 0));
    v_alw_units := LEAST(v_requested, v_free);
    v_remaining := v_requested - v_alw_units;
    v_avail := a.balance::numeric - a.reserved + a.credit_limit;
    IF t.price_minor <= 0 THEN
        v_affordable := 18446744073709551615; -- u64::MAX: free units are unlimited
    ELSIF v_avail <= 0 THEN
        v_affordable := 0;
    ELSE
        v_affordable := LEAST(div(v_avail * t.price_per_units, t.price_minor), 18446744073709551615);
    END IF;
    v_money_units := LEAST(v_remaining, v_affordable);
    v_amount := tollgate_amount_for(v_money_units, t.price_minor, t.price_per_units);
    IF v_amount IS NULL THEN
        RETURN '{"ok": {"Refused": "CreditLimitReached"}}'::jsonb;
    END IF;
    v_units := v_alw_units + v_money_units;
    IF v_requested > 0 AND (v_units = 0 OR v_units < LEAST(GREATEST(t.min_grant, 0), v_requested)) THEN
        RETURN '{"ok": {"Refused": "CreditLimitReached"}}'::jsonb;
    END IF;
    v_final := t.price_minor > 0 AND v_money_units = v_affordable AND v_alw_units = v_free;
    v_alw := CASE WHEN v_alw_units > 0 THEN v_alw_id END;
    WITH res AS (
        INSERT INTO reservations (id, account_id, session_ref, service_context, rating_group,
            service_id, unit, granted_units, allowance_id, allowance_units, pending_amount,
            price_minor, price_per_units, expires_at_ms, status, session_used, session_charged,
            request_key, created_at_ms)
        VALUES (p_id, a.id, p_sref, p_ctx, p_rg, p_sid, p_unit, v_units, v_alw, v_alw_units,
            v_amount, t.price_minor, t.price_per_units, p_expires, 'open', p_s_used, p_s_charged,
            p_key, p_now)),
    entry AS (
        INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id, units,
            pending_units, reservation_id, used_units, unbilled, request_key, created_at_ms)
        VALUES (a.id, 'pending', 0, v_amount, v_alw, 0, v_alw_units, p_id, NULL, 0, p_key, p_now)),
    alw AS (
        UPDATE allowances SET reserved = reserved + v_alw_units WHERE id = v_alw)
    UPDATE accounts SET reserved = reserved + v_amount WHERE id = a.id;
    RETURN jsonb_build_object('ok', jsonb_build_object('Granted', jsonb_build_object(
        'units', v_units::bigint, 'from_allowance', v_alw_units::bigint,
        'amount', v_amount::bigint, 'final_grant', v_final, 'expires_at', p_expires)));
END $$;

-- Op results below: {"ok": OpOutcome, "account": id or null} or an {"err": ...} object.

CREATE FUNCTION tollgate_op_reserve(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    a accounts;
    v_out JSONB;
BEGIN
    -- The locked account of the Subscription-Id (ops.rs `account_by_subscriber`).
    SELECT acc.* INTO a FROM subscriptions s JOIN accounts acc ON acc.id = s.account_id
        WHERE s.sub_type = (p_op->>'st')::smallint AND s.sub_data = p_op->>'sd'
        FOR UPDATE OF acc;
    IF a.id IS NULL THEN
        RETURN '{"ok": {"Reserve": {"Refused": "UnknownSubscriber"}}}'::jsonb;
    END IF;
    IF EXISTS (SELECT 1 FROM reservations WHERE session_ref = p_op->>'sref' AND status = 'open'
            AND service_context = p_op->>'ctx'
            AND COALESCE(rating_group, -1) = COALESCE((p_op->>'rg')::bigint, -1)
            AND COALESCE(service_id, -1) = COALESCE((p_op->>'sid')::bigint, -1)) THEN
        RETURN '{"err": "open"}'::jsonb;
    END IF;
    v_out := tollgate_open_reservation(p_now, a, p_op->>'ctx', (p_op->>'rg')::bigint,
        (p_op->>'sid')::bigint, p_op->>'unit', (p_op->>'req')::numeric, p_op->>'sref',
        (p_op->>'exp')::bigint, p_op->>'key', p_op->>'rid', 0, 0);
    IF v_out ? 'err' THEN
        RETURN v_out;
    END IF;
    RETURN jsonb_build_object('ok', jsonb_build_object('Reserve', v_out->'ok'), 'account', a.id);
END $$;

-- Post the open reservation (overdraft policy: charge down to the credit floor, the rest is
-- `unbilled`), optionally open the next one, write the charging record on a final commit.
CREATE FUNCTION tollgate_op_commit(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    v_next_wanted BOOLEAN := COALESCE((p_op->>'next')::boolean, false);
    v_final BOOLEAN := COALESCE((p_op->>'final')::boolean, false);
    v_sref TEXT := p_op->>'sref';
    v_key TEXT := p_op->>'key';
    v_id TEXT;
    v_account TEXT;
    r reservations;
    a accounts;
    fresh accounts;
    v_used NUMERIC;
    v_from_alw NUMERIC;
    v_rated NUMERIC;
    v_cap NUMERIC;
    v_charged NUMERIC;
    v_unbilled NUMERIC;
    v_s_used BIGINT;
    v_s_charged BIGINT;
    v_o JSONB;
    v_next JSONB := 'null'::jsonb;
BEGIN
    IF v_final AND v_next_wanted THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason',
            'a final commit cannot open a next reservation');
    END IF;
    IF v_next_wanted AND (p_op->>'nreq')::numeric > 9223372036854775807 THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'unit count beyond 2^63');
    END IF;
    SELECT id, account_id INTO v_id, v_account FROM reservations
        WHERE session_ref = v_sref AND status = 'open' AND service_context = p_op->>'ctx'
          AND COALESCE(rating_group, -1) = COALESCE((p_op->>'rg')::bigint, -1)
          AND COALESCE(service_id, -1) = COALESCE((p_op->>'sid')::bigint, -1)
        ORDER BY id LIMIT 1;
    IF v_id IS NULL THEN
        RETURN '{"ok": {"Commit": {"Refused": "NoReservation"}}}'::jsonb;
    END IF;
    SELECT * INTO a FROM accounts WHERE id = v_account FOR UPDATE;
    IF a.id IS NULL THEN
        RETURN '{"ok": {"Commit": {"Refused": "UnknownSubscriber"}}}'::jsonb;
    END IF;
    -- Re-read under the account lock: another node may have resolved it meanwhile.
    SELECT * INTO r FROM reservations WHERE id = v_id AND status = 'open';
    IF r.id IS NULL THEN
        RETURN jsonb_build_object('ok', '{"Commit": {"Refused": "NoReservation"}}'::jsonb,
            'account', a.id);
    END IF;
    v_used := (p_op->>'used')::numeric;
    IF v_used > 9223372036854775807 THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'unit count beyond 2^63');
    END IF;
    v_from_alw := LEAST(v_used, r.allowance_units);
    v_rated := tollgate_amount_for(v_used - v_from_alw, r.price_minor, r.price_per_units);
    IF v_rated IS NULL THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'charge overflows');
    END IF;
    v_cap := GREATEST(a.balance::numeric - a.reserved + a.credit_limit + r.pending_amount, 0);
    v_charged := LEAST(v_rated, v_cap);
    v_unbilled := v_rated - v_charged;
    v_s_used := r.session_used + v_used::bigint;
    v_s_charged := r.session_charged + v_charged::bigint;
    -- The post entry, its cached sums, the resolved reservation and (final commit) the charging
    -- record with the session totals; RETURNING gives the account as ops.rs re-reads it.
    WITH entry AS (
        INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id, units,
            pending_units, reservation_id, used_units, unbilled, request_key, created_at_ms)
        VALUES (a.id, 'post', -v_charged, -r.pending_amount, r.allowance_id, -v_from_alw,
            -r.allowance_units, r.id, v_used, v_unbilled, v_key, p_now)),
    alw AS (
        UPDATE allowances SET remaining = remaining - v_from_alw,
            reserved = reserved - r.allowance_units WHERE id = r.allowance_id),
    res AS (
        UPDATE reservations SET status = 'posted', used_units = v_used, charged = v_charged,
            resolved_at_ms = p_now WHERE id = r.id AND status = 'open'),
    cdr AS (
        INSERT INTO charging_records (account_id, kind, session_ref, service_context, rating_group,
            service_id, unit, used_units, charged, request_key, payload, created_at_ms)
        SELECT a.id, 'session', v_sref, r.service_context, r.rating_group, r.service_id, r.unit,
            v_s_used, v_s_charged, v_key, p_op->'cdr', p_now
        WHERE v_final)
    UPDATE accounts SET balance = balance - v_charged, reserved = reserved - r.pending_amount
        WHERE id = a.id RETURNING * INTO fresh;
    IF v_next_wanted THEN
        IF fresh.id IS NULL THEN
            fresh := a;
        END IF;
        v_o := tollgate_open_reservation(p_now, fresh, r.service_context, r.rating_group,
            r.service_id, r.unit, (p_op->>'nreq')::numeric, v_sref, (p_op->>'nexp')::bigint,
            v_key, p_op->>'rid', v_s_used, v_s_charged);
        IF v_o ? 'err' THEN
            -- Cannot happen after the validation above; never leave a half-applied op.
            RAISE EXCEPTION 'next reservation failed after post: %', v_o;
        END IF;
        v_next := v_o->'ok';
    END IF;
    RETURN jsonb_build_object('ok', jsonb_build_object('Commit', jsonb_build_object('Committed',
        jsonb_build_object('charged', v_charged::bigint, 'from_allowance', v_from_alw::bigint,
            'unbilled', v_unbilled::bigint, 'next', v_next))), 'account', a.id);
END $$;

-- Void every open reservation of the session (or of one service key), one charging record each.
CREATE FUNCTION tollgate_op_release(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    v_sref TEXT := p_op->>'sref';
    v_key TEXT := p_op->>'key';
    v_all BOOLEAN := NOT (p_op ? 'ctx');
    r reservations;
    cur reservations;
    v_n INTEGER := 0;
    v_amount BIGINT := 0;
    v_units NUMERIC := 0;
    v_account TEXT;
BEGIN
    FOR r IN SELECT * FROM reservations WHERE session_ref = v_sref AND status = 'open'
            AND (v_all OR (service_context = p_op->>'ctx'
                AND COALESCE(rating_group, -1) = COALESCE((p_op->>'rg')::bigint, -1)
                AND COALESCE(service_id, -1) = COALESCE((p_op->>'sid')::bigint, -1)))
            ORDER BY id LOOP
        PERFORM 1 FROM accounts WHERE id = r.account_id FOR UPDATE;
        -- Re-checked under the lock (ops.rs `unwind`): the sweeper or a commit may have won.
        SELECT * INTO cur FROM reservations WHERE id = r.id AND status = 'open';
        IF cur.id IS NOT NULL THEN
            WITH entry AS (
                INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id,
                    units, pending_units, reservation_id, used_units, unbilled, request_key,
                    created_at_ms)
                VALUES (cur.account_id, 'void', 0, -cur.pending_amount, cur.allowance_id, 0,
                    -cur.allowance_units, cur.id, NULL, 0, v_key, p_now)),
            alw AS (
                UPDATE allowances SET reserved = reserved - cur.allowance_units
                    WHERE id = cur.allowance_id),
            res AS (
                UPDATE reservations SET status = 'voided', used_units = 0, charged = 0,
                    resolved_at_ms = p_now WHERE id = cur.id),
            cdr AS (
                INSERT INTO charging_records (account_id, kind, session_ref, service_context,
                    rating_group, service_id, unit, used_units, charged, request_key, payload,
                    created_at_ms)
                VALUES (r.account_id, 'session', v_sref, r.service_context, r.rating_group,
                    r.service_id, r.unit, r.session_used, r.session_charged, v_key, p_op->'cdr',
                    p_now))
            UPDATE accounts SET reserved = reserved - cur.pending_amount
                WHERE id = cur.account_id;
            v_n := v_n + 1;
            v_amount := v_amount + cur.pending_amount;
            v_units := v_units + GREATEST(cur.allowance_units, 0);
        END IF;
        v_account := r.account_id;
    END LOOP;
    RETURN jsonb_build_object('ok', jsonb_build_object('Release', jsonb_build_object(
        'reservations', v_n, 'amount', v_amount, 'units', v_units)), 'account', v_account);
END $$;

-- IEC: all or nothing, allowance units first, one charging record of kind 'event'.
CREATE FUNCTION tollgate_op_direct_debit(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    v_units NUMERIC := (p_op->>'units')::numeric;
    v_key TEXT := p_op->>'key';
    a accounts;
    t tariffs;
    v_alw_id BIGINT;
    v_free BIGINT;
    v_from_alw NUMERIC := 0;
    v_amount NUMERIC;
    v_alw BIGINT;
BEGIN
    IF v_units > 9223372036854775807 THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'unit count beyond 2^63');
    END IF;
    -- The locked account of the Subscription-Id (ops.rs `account_by_subscriber`).
    SELECT acc.* INTO a FROM subscriptions s JOIN accounts acc ON acc.id = s.account_id
        WHERE s.sub_type = (p_op->>'st')::smallint AND s.sub_data = p_op->>'sd'
        FOR UPDATE OF acc;
    IF a.id IS NULL THEN
        RETURN '{"ok": {"DirectDebit": {"Refused": "UnknownSubscriber"}}}'::jsonb;
    END IF;
    IF a.status <> 'active' THEN
        RETURN '{"ok": {"DirectDebit": {"Refused": "AccountBlocked"}}}'::jsonb;
    END IF;
    t := tollgate_tariff(p_op->>'ctx', p_op->>'unit', a.currency, (p_op->>'sid')::bigint,
        (p_op->>'rg')::bigint);
    IF t.id IS NULL THEN
        RETURN '{"ok": {"DirectDebit": {"Refused": "NoTariff"}}}'::jsonb;
    END IF;
    SELECT id, remaining - reserved INTO v_alw_id, v_free FROM allowances
        WHERE account_id = a.id AND unit = p_op->>'unit' AND valid_until_ms > p_now
          AND remaining - reserved > 0
        ORDER BY valid_until_ms, id LIMIT 1;
    IF v_alw_id IS NOT NULL THEN
        v_from_alw := LEAST(v_free, v_units);
    END IF;
    v_amount := tollgate_amount_for(v_units - v_from_alw, t.price_minor, t.price_per_units);
    -- All or nothing: no partial debit (RFC 4006 §6.3).
    IF v_amount IS NULL OR v_amount > a.balance::numeric - a.reserved + a.credit_limit THEN
        RETURN '{"ok": {"DirectDebit": {"Refused": "CreditLimitReached"}}}'::jsonb;
    END IF;
    v_alw := CASE WHEN v_from_alw > 0 THEN v_alw_id END;
    WITH entry AS (
        INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id, units,
            pending_units, reservation_id, used_units, unbilled, request_key, created_at_ms)
        VALUES (a.id, 'direct_debit', -v_amount, 0, v_alw, -v_from_alw, 0, NULL, v_units, 0,
            v_key, p_now)),
    alw AS (
        UPDATE allowances SET remaining = remaining - v_from_alw WHERE id = v_alw),
    cdr AS (
        INSERT INTO charging_records (account_id, kind, session_ref, service_context, rating_group,
            service_id, unit, used_units, charged, request_key, payload, created_at_ms)
        VALUES (a.id, 'event', p_op->>'sess', p_op->>'ctx', (p_op->>'rg')::bigint,
            (p_op->>'sid')::bigint, p_op->>'unit', v_units, v_amount, v_key, p_op->'cdr', p_now))
    UPDATE accounts SET balance = balance - v_amount WHERE id = a.id;
    RETURN jsonb_build_object('ok', jsonb_build_object('DirectDebit', jsonb_build_object('Debited',
        jsonb_build_object('units', v_units::bigint, 'from_allowance', v_from_alw::bigint,
            'charged', v_amount::bigint))), 'account', a.id);
END $$;

-- REFUND_ACCOUNT: a new correcting entry, money or units at the current tariff.
CREATE FUNCTION tollgate_op_refund(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    a accounts;
    t tariffs;
    v_amount NUMERIC;
BEGIN
    -- The locked account of the Subscription-Id (ops.rs `account_by_subscriber`).
    SELECT acc.* INTO a FROM subscriptions s JOIN accounts acc ON acc.id = s.account_id
        WHERE s.sub_type = (p_op->>'st')::smallint AND s.sub_data = p_op->>'sd'
        FOR UPDATE OF acc;
    IF a.id IS NULL THEN
        RETURN '{"ok": {"Refund": {"Refused": "UnknownSubscriber"}}}'::jsonb;
    END IF;
    IF p_op ? 'money' THEN
        v_amount := (p_op->>'money')::numeric;
    ELSE
        t := tollgate_tariff(p_op->>'ctx', p_op->>'unit', a.currency, (p_op->>'sid')::bigint,
            (p_op->>'rg')::bigint);
        IF t.id IS NULL THEN
            RETURN '{"ok": {"Refund": {"Refused": "NoTariff"}}}'::jsonb;
        END IF;
        v_amount := tollgate_amount_for((p_op->>'units')::numeric, t.price_minor, t.price_per_units);
        IF v_amount IS NULL THEN
            RETURN jsonb_build_object('err', 'invalid', 'reason', 'refund overflows');
        END IF;
    END IF;
    IF v_amount <= 0 THEN
        RETURN jsonb_build_object('err', 'invalid', 'reason', 'refund amount must be positive');
    END IF;
    WITH entry AS (
        INSERT INTO ledger_entries (account_id, kind, amount, pending_delta, allowance_id, units,
            pending_units, reservation_id, used_units, unbilled, request_key, created_at_ms)
        VALUES (a.id, 'refund', v_amount, 0, NULL, 0, 0, NULL, NULL, 0, p_op->>'key', p_now))
    UPDATE accounts SET balance = balance + v_amount WHERE id = a.id;
    RETURN jsonb_build_object('ok', jsonb_build_object('Refund', jsonb_build_object('Refunded',
        jsonb_build_object('amount', v_amount::bigint))), 'account', a.id);
END $$;

-- One operation with idempotency: replay a stored outcome, reject a changed duplicate,
-- otherwise execute and store the outcome (ops.rs `Exec::apply`).
CREATE FUNCTION tollgate_apply_op(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    v_key TEXT := p_op->>'key';
    v_fp TEXT := p_op->>'fp';
    v_stored_fp TEXT;
    v_stored JSONB;
    v_res JSONB;
BEGIN
    SELECT fingerprint, outcome INTO v_stored_fp, v_stored FROM idempotency_keys
        WHERE request_key = v_key;
    IF v_stored_fp IS NOT NULL THEN
        IF v_stored_fp <> v_fp THEN
            RETURN '{"err": "changed"}'::jsonb;
        END IF;
        RETURN jsonb_build_object('ok', v_stored);
    END IF;
    CASE p_op->>'op'
        WHEN 'reserve' THEN v_res := tollgate_op_reserve(p_now, p_op);
        WHEN 'commit' THEN v_res := tollgate_op_commit(p_now, p_op);
        WHEN 'release' THEN v_res := tollgate_op_release(p_now, p_op);
        WHEN 'direct_debit' THEN v_res := tollgate_op_direct_debit(p_now, p_op);
        WHEN 'refund' THEN v_res := tollgate_op_refund(p_now, p_op);
        ELSE RAISE EXCEPTION 'unknown ledger operation %', p_op->>'op';
    END CASE;
    IF v_res ? 'ok' THEN
        INSERT INTO idempotency_keys (request_key, op, fingerprint, outcome, account_id, created_at_ms)
        VALUES (v_key, p_op->>'op', v_fp, v_res->'ok', v_res->>'account', p_now);
        RETURN jsonb_build_object('ok', v_res->'ok');
    END IF;
    RETURN v_res;
END $$;

-- The batch: lock every account it will touch in id order in one statement (batches of all
-- workers and nodes lock in the same order, so they never deadlock on these locks), then apply
-- each op in arrival order. Returns a JSON array with one result per op, same order.
--
-- enable_seqscan = off: every statement here is a key lookup. On a small, hot accounts table
-- (a few accounts updated thousands of times a second) the planner picks sequential scans, and
-- each one walks every row version the batch has written so far (they cannot be pruned until
-- it commits); measured ~25% of the function's CPU. The setting applies to this call only.
CREATE FUNCTION tollgate_apply_batch(p_now BIGINT, p_ops JSONB) RETURNS JSONB LANGUAGE plpgsql
SET enable_seqscan = off AS $$
DECLARE
    v_out JSONB[] := '{}';
    v_n INTEGER := jsonb_array_length(p_ops);
BEGIN
    PERFORM 1 FROM accounts a WHERE a.id IN (
        SELECT s.account_id FROM jsonb_array_elements(p_ops) AS o(v)
            JOIN subscriptions s
              ON s.sub_type = (o.v->>'st')::smallint AND s.sub_data = o.v->>'sd'
        UNION ALL
        SELECT r.account_id FROM jsonb_array_elements(p_ops) AS o(v)
            JOIN reservations r ON r.session_ref = o.v->>'sref' AND r.status = 'open'
        WHERE o.v->>'op' IN ('commit', 'release'))
    ORDER BY a.id FOR UPDATE;
    FOR i IN 0 .. v_n - 1 LOOP
        v_out := array_append(v_out, tollgate_apply_op(p_now, p_ops->i));
    END LOOP;
    RETURN to_jsonb(v_out);
END $$;
