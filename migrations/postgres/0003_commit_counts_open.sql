-- Tollgate ledger, PostgreSQL: a final commit says how many reservations of its session are
-- still open (`session_open` in the Committed outcome, tollgate_ocs::Committed), so that a
-- CCR-T whose every reservation was posted needs no separate release operation. The release
-- used to cost a whole ledger operation (a batch slot, a lookup, an idempotency row) on every
-- session end, i.e. one operation in five of an SCUR flow with two updates and one in three of
-- an ECUR pair. Everything else is 0002's function unchanged. Append-only: never edit 0002.

CREATE OR REPLACE FUNCTION tollgate_op_commit(p_now BIGINT, p_op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
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
    v_open INTEGER;
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
    IF v_final THEN
        -- What else of the session is still open, after this post (ops.rs counts the same).
        SELECT count(*) INTO v_open FROM reservations
            WHERE session_ref = v_sref AND status = 'open';
    END IF;
    RETURN jsonb_build_object('ok', jsonb_build_object('Commit', jsonb_build_object('Committed',
        jsonb_build_object('charged', v_charged::bigint, 'from_allowance', v_from_alw::bigint,
            'unbilled', v_unbilled::bigint, 'next', v_next, 'session_open', v_open))),
        'account', a.id);
END $$;
