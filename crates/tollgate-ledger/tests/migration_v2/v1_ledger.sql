-- A ledger as v1 (migrations postgres/0001-0005, sqlite/0001-0002) left it, for
-- tests/migration_v2.rs. The same statements load it into PostgreSQL and SQLite.
--
-- Written by v1's own code: the money engine at the last v1 commit
-- (crates/tollgate-ocs/src/engine) applied each request below as a batch of its own, and the
-- rows are what v1's store wrote for the resulting effects (crates/tollgate-ledger/src/batch/
-- write.rs: reservations, entries in op order, cached sums, charging records, idempotency
-- rows; src/admin.rs: accounts, their opening `topup` entries, allowances, top-ups). Each
-- table holds its final rows: a reservation resolved later is written as resolved. Ids are
-- the ones v1's sequences gave (the test moves PostgreSQL's sequences past them).
--
-- T0 = 1800000000000 (ms). Tariffs and accounts a day before T0. Requests, in order:
--   T0+1s      top-up alice 10.00                               topup, no request key
--   s-001      alice, voice (32260@3gpp.org, 0.01/s, quantum 60): CCR-I, CCR-U (55 s used,
--              next 60 s), CCR-U (60 s, next 60 s), CCR-T (20 s): three reservations, all
--              posted; each CCR-U is a post and a pending entry under one request key; a
--              session charging record (135 s, 1.35)
--   IEC        alice 3 MMS (32270@3gpp.org, 0.10/unit) from her allowance 1 (100 -> 97
--              units: partly used), charged 0; carol 4 MMS in money (0.40)
--   s-005      carol, Gy data RG 10 (0.000001/octet): CCR-I holds 5 MB (5.00), CCR-T without
--              usage releases it (key with Rating-Group 4294967295, the rest of the session):
--              voided, charging record with nothing used
--   s-006      carol, voice: CCR-I holds 120 s, nothing follows; the sweeper expires it at
--              T0+1100s (kind 'expire', no request key); the late CCR-U is refused
--              (NoReservation: stored answer, no account, no entry)
--   refund     carol 2.50 (REFUND_ACCOUNT)
--   refusals   dave (0.05, below the 10 s minimum grant): CCR-I refused CreditLimitReached
--              (stored with his account); an unknown subscriber's CCR-I; dave's IEC refused
--              (stored without an account). Answers stored, no entries.
--   s-004      bob (credit limit 5.00, balance 1.00, allowance 2: 300 s), voice, STILL OPEN:
--              CCR-I holds 120 s from the allowance; CCR-U posts 100 s from it and holds the
--              next 300 s: 200 s from the allowance (units held) + 100 s in money (1.00),
--              expiring at T0+2690s.

INSERT INTO tariffs (id, service_context, rating_group, service_id, unit, currency, price_minor,
    price_per_units, quantum, min_grant, updated_at_ms) VALUES
    (1, '32260@3gpp.org', NULL, NULL, 'seconds', 'EUR', 1, 1, 60, 10, 1799913600000),
    (2, '32270@3gpp.org', NULL, NULL, 'units', 'EUR', 10, 1, 1, 1, 1799913600000),
    (3, '32251@3gpp.org', 10, NULL, 'octets', 'EUR', 1, 10000, 1000000, 0, 1799913600000);

INSERT INTO accounts (id, currency, scale, credit_limit, status, balance, reserved, created_at_ms) VALUES
    ('alice', 'EUR', 2, 0, 'active', 5865, 0, 1799913601000),
    ('bob', 'EUR', 2, 500, 'active', 100, 100, 1799913602000),
    ('carol', 'EUR', 2, 0, 'active', 2210, 0, 1799913603000),
    ('dave', 'EUR', 2, 0, 'active', 5, 0, 1799913604000);

INSERT INTO subscriptions (sub_type, sub_data, account_id) VALUES
    (0, '15550000001', 'alice'),
    (2, 'sip:alice@example.com', 'alice'),
    (0, '15550000002', 'bob'),
    (0, '15550000003', 'carol'),
    (1, '001010000000003', 'carol'),
    (0, '15550000004', 'dave');

INSERT INTO allowances (id, account_id, unit, valid_until_ms, remaining, reserved, created_at_ms) VALUES
    (1, 'alice', 'units', 1802592000000, 97, 0, 1799913601000),
    (2, 'bob', 'seconds', 1802592000000, 200, 200, 1799913602000);

INSERT INTO reservations (id, account_id, session_ref, service_context, rating_group, service_id,
    unit, granted_units, allowance_id, allowance_units, pending_amount, price_minor, price_per_units,
    expires_at_ms, status, used_units, charged, session_used, session_charged, request_key,
    created_at_ms, resolved_at_ms) VALUES
    ('r18fadf306a572d15-1092-0000000000000000', 'alice', 'scscf.ims.example.net;1800000000;1',
     '32260@3gpp.org', NULL, NULL, 'seconds', 60, NULL, 0, 60, 1, 1, 1800000610000, 'posted', 55, 55, 0, 0,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|0|', 1800000010000, 1800000070000),
    ('r18fadf306a572d15-1092-0000000000000001', 'alice', 'scscf.ims.example.net;1800000000;1',
     '32260@3gpp.org', NULL, NULL, 'seconds', 60, NULL, 0, 60, 1, 1, 1800000670000, 'posted', 60, 60, 55, 55,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|1|', 1800000070000, 1800000130000),
    ('r18fadf306a572d15-1092-0000000000000002', 'alice', 'scscf.ims.example.net;1800000000;1',
     '32260@3gpp.org', NULL, NULL, 'seconds', 60, NULL, 0, 60, 1, 1, 1800000730000, 'posted', 20, 20, 115, 115,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|2|', 1800000130000, 1800000160000),
    ('r18fadf306a572d15-1092-0000000000000003', 'carol', 'pgw.epc.example.net;1800000300;5',
     '32251@3gpp.org', 10, NULL, 'octets', 5000000, NULL, 0, 500, 1, 10000, 1800000900000, 'voided', 0, 0, 0, 0,
     '19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|0|10', 1800000300000, 1800000320000),
    ('r18fadf306a572d15-1092-0000000000000004', 'carol', 'scscf.ims.example.net;1800000400;6',
     '32260@3gpp.org', NULL, NULL, 'seconds', 120, NULL, 0, 120, 1, 1, 1800001000000, 'expired', 0, 0, 0, 0,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000400;6|0|', 1800000400000, 1800001100000),
    ('r18fadf306a572d15-1092-0000000000000005', 'bob', 'scscf.ims.example.net;1800002000;4',
     '32260@3gpp.org', NULL, NULL, 'seconds', 120, 2, 120, 0, 1, 1, 1800002600000, 'posted', 100, 0, 0, 0,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|0|', 1800002000000, 1800002090000),
    ('r18fadf306a572d15-1092-0000000000000006', 'bob', 'scscf.ims.example.net;1800002000;4',
     '32260@3gpp.org', NULL, NULL, 'seconds', 300, 2, 200, 100, 1, 1, 1800002690000, 'open', NULL, NULL, 100, 0,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|1|', 1800002090000, NULL);

INSERT INTO ledger_entries (id, account_id, kind, amount, pending_delta, allowance_id, units,
    pending_units, reservation_id, used_units, unbilled, request_key, created_at_ms) VALUES
    -- account create alice: opening balance
    (1, 'alice', 'topup', 5000, 0, NULL, 0, 0, NULL,
     NULL, 0, NULL, 1799913601000),
    -- account create alice: allowance 1 granted
    (2, 'alice', 'topup', 0, 0, 1, 100, 0, NULL,
     NULL, 0, NULL, 1799913601000),
    -- account create bob: opening balance
    (3, 'bob', 'topup', 100, 0, NULL, 0, 0, NULL,
     NULL, 0, NULL, 1799913602000),
    -- account create bob: allowance 2 granted
    (4, 'bob', 'topup', 0, 0, 2, 300, 0, NULL,
     NULL, 0, NULL, 1799913602000),
    -- account create carol: opening balance
    (5, 'carol', 'topup', 2000, 0, NULL, 0, 0, NULL,
     NULL, 0, NULL, 1799913603000),
    -- account create dave: opening balance
    (6, 'dave', 'topup', 5, 0, NULL, 0, 0, NULL,
     NULL, 0, NULL, 1799913604000),
    -- account topup alice
    (7, 'alice', 'topup', 1000, 0, NULL, 0, 0, NULL,
     NULL, 0, NULL, 1800000001000),
    -- s-001 CCR-I: hold
    (8, 'alice', 'pending', 0, 60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000000',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|0|', 1800000010000),
    -- s-001 CCR-U 1: post
    (9, 'alice', 'post', -55, -60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000000',
     55, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|1|', 1800000070000),
    -- s-001 CCR-U 1: next hold
    (10, 'alice', 'pending', 0, 60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000001',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|1|', 1800000070000),
    -- s-001 CCR-U 2: post
    (11, 'alice', 'post', -60, -60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000001',
     60, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|2|', 1800000130000),
    -- s-001 CCR-U 2: next hold
    (12, 'alice', 'pending', 0, 60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000002',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|2|', 1800000130000),
    -- s-001 CCR-T: post
    (13, 'alice', 'post', -20, -60, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000002',
     20, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|3|', 1800000160000),
    -- IEC alice: 3 MMS from allowance 1
    (14, 'alice', 'direct_debit', 0, 0, 1, -3, 0, NULL,
     3, 0, '16:mmsc.example.net|29:mmsc.example.net;1800000200;7|0|', 1800000200000),
    -- IEC carol: 4 MMS in money
    (15, 'carol', 'direct_debit', -40, 0, NULL, 0, 0, NULL,
     4, 0, '16:mmsc.example.net|29:mmsc.example.net;1800000250;8|0|', 1800000250000),
    -- s-005 CCR-I RG 10: hold
    (16, 'carol', 'pending', 0, 500, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000003',
     NULL, 0, '19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|0|10', 1800000300000),
    -- s-005 CCR-T: void
    (17, 'carol', 'void', 0, -500, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000003',
     NULL, 0, '19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|1|4294967295', 1800000320000),
    -- s-006 CCR-I: hold
    (18, 'carol', 'pending', 0, 120, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000004',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000400;6|0|', 1800000400000),
    -- sweeper: expired
    (19, 'carol', 'expire', 0, -120, NULL, 0, 0, 'r18fadf306a572d15-1092-0000000000000004',
     NULL, 0, NULL, 1800001100000),
    -- refund carol 2.50
    (20, 'carol', 'refund', 250, 0, NULL, 0, 0, NULL,
     NULL, 0, '18:as.ims.example.net|31:as.ims.example.net;1800001300;9|0|', 1800001300000),
    -- s-004 CCR-I: hold from allowance 2
    (21, 'bob', 'pending', 0, 0, 2, 0, 120, 'r18fadf306a572d15-1092-0000000000000005',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|0|', 1800002000000),
    -- s-004 CCR-U 1: post
    (22, 'bob', 'post', 0, 0, 2, -100, -120, 'r18fadf306a572d15-1092-0000000000000005',
     100, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|1|', 1800002090000),
    -- s-004 CCR-U 1: next hold (open)
    (23, 'bob', 'pending', 0, 100, 2, 0, 200, 'r18fadf306a572d15-1092-0000000000000006',
     NULL, 0, '21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|1|', 1800002090000);

INSERT INTO charging_records (id, account_id, kind, session_ref, service_context, rating_group,
    service_id, unit, used_units, charged, request_key, payload, created_at_ms) VALUES
    (1, 'alice', 'session', 'scscf.ims.example.net;1800000000;1', '32260@3gpp.org', NULL, NULL, 'seconds', 135, 135,
     '21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|3|',
     '{"cc_request_number":3,"origin_host":"scscf.ims.example.net","service_context_id":"32260@3gpp.org","session_id":"scscf.ims.example.net;1800000000;1","subscription_ids":["e164:15550000001"],"termination_cause":1}',
     1800000160000),
    (2, 'alice', 'event', 'mmsc.example.net;1800000200;7', '32270@3gpp.org', NULL, NULL, 'units', 3, 0,
     '16:mmsc.example.net|29:mmsc.example.net;1800000200;7|0|',
     '{"cc_request_number":0,"origin_host":"mmsc.example.net","service_context_id":"32270@3gpp.org","session_id":"mmsc.example.net;1800000200;7","subscription_ids":["e164:15550000001"]}',
     1800000200000),
    (3, 'carol', 'event', 'mmsc.example.net;1800000250;8', '32270@3gpp.org', NULL, NULL, 'units', 4, 40,
     '16:mmsc.example.net|29:mmsc.example.net;1800000250;8|0|',
     NULL,
     1800000250000),
    (4, 'carol', 'session', 'pgw.epc.example.net;1800000300;5', '32251@3gpp.org', 10, NULL, 'octets', 0, 0,
     '19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|1|4294967295',
     '{"cc_request_number":1,"origin_host":"pgw.epc.example.net","service_context_id":"32251@3gpp.org","session_id":"pgw.epc.example.net;1800000300;5","subscription_ids":["e164:15550000003"],"termination_cause":1}',
     1800000320000);

INSERT INTO idempotency_keys (request_key, op, fingerprint, outcome, account_id, created_at_ms) VALUES
    -- s-001 CCR-I
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|0|', 'reserve',
     '["reserve",{"data":"15550000001","kind":"E164"},{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},"seconds",null,"scscf.ims.example.net;1800000000;1"]',
     '{"Reserve":{"Granted":{"units":60,"from_allowance":0,"amount":60,"final_grant":false,"expires_at":1800000610000}}}',
     'alice', 1800000010000),
    -- s-001 CCR-U 1
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|1|', 'commit',
     '["commit","scscf.ims.example.net;1800000000;1",{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},55,null,true,false]',
     '{"Commit":{"Committed":{"charged":55,"from_allowance":0,"unbilled":0,"next":{"Granted":{"units":60,"from_allowance":0,"amount":60,"final_grant":false,"expires_at":1800000670000}},"session_open":null}}}',
     'alice', 1800000070000),
    -- s-001 CCR-U 2
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|2|', 'commit',
     '["commit","scscf.ims.example.net;1800000000;1",{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},60,null,true,false]',
     '{"Commit":{"Committed":{"charged":60,"from_allowance":0,"unbilled":0,"next":{"Granted":{"units":60,"from_allowance":0,"amount":60,"final_grant":false,"expires_at":1800000730000}},"session_open":null}}}',
     'alice', 1800000130000),
    -- s-001 CCR-T
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000000;1|3|', 'commit',
     '["commit","scscf.ims.example.net;1800000000;1",{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},20,null,false,true]',
     '{"Commit":{"Committed":{"charged":20,"from_allowance":0,"unbilled":0,"next":null,"session_open":0}}}',
     'alice', 1800000160000),
    -- IEC alice
    ('16:mmsc.example.net|29:mmsc.example.net;1800000200;7|0|', 'direct_debit',
     '["direct_debit",{"data":"15550000001","kind":"E164"},{"rating_group":null,"service_context":"32270@3gpp.org","service_id":null},"units",3]',
     '{"DirectDebit":{"Debited":{"units":3,"from_allowance":3,"charged":0}}}',
     'alice', 1800000200000),
    -- IEC carol
    ('16:mmsc.example.net|29:mmsc.example.net;1800000250;8|0|', 'direct_debit',
     '["direct_debit",{"data":"15550000003","kind":"E164"},{"rating_group":null,"service_context":"32270@3gpp.org","service_id":null},"units",4]',
     '{"DirectDebit":{"Debited":{"units":4,"from_allowance":0,"charged":40}}}',
     'carol', 1800000250000),
    -- s-005 CCR-I RG 10
    ('19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|0|10', 'reserve',
     '["reserve",{"data":"15550000003","kind":"E164"},{"rating_group":10,"service_context":"32251@3gpp.org","service_id":null},"octets",5000000,"pgw.epc.example.net;1800000300;5"]',
     '{"Reserve":{"Granted":{"units":5000000,"from_allowance":0,"amount":500,"final_grant":false,"expires_at":1800000900000}}}',
     'carol', 1800000300000),
    -- s-005 CCR-T
    ('19:pgw.epc.example.net|32:pgw.epc.example.net;1800000300;5|1|4294967295', 'release',
     '["release","pgw.epc.example.net;1800000300;5",null]',
     '{"Release":{"reservations":1,"amount":500,"units":0}}',
     'carol', 1800000320000),
    -- s-006 CCR-I
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000400;6|0|', 'reserve',
     '["reserve",{"data":"15550000003","kind":"E164"},{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},"seconds",120,"scscf.ims.example.net;1800000400;6"]',
     '{"Reserve":{"Granted":{"units":120,"from_allowance":0,"amount":120,"final_grant":false,"expires_at":1800001000000}}}',
     'carol', 1800000400000),
    -- s-006 late CCR-U
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800000400;6|1|', 'commit',
     '["commit","scscf.ims.example.net;1800000400;6",{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},30,null,true,false]',
     '{"Commit":{"Refused":"NoReservation"}}',
     NULL, 1800001200000),
    -- refund carol 2.50
    ('18:as.ims.example.net|31:as.ims.example.net;1800001300;9|0|', 'refund',
     '["refund",{"data":"15550000003","kind":"E164"},{"Money":250}]',
     '{"Refund":{"Refunded":{"amount":250}}}',
     'carol', 1800001300000),
    -- dave CCR-I
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800001400;7|0|', 'reserve',
     '["reserve",{"data":"15550000004","kind":"E164"},{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},"seconds",null,"scscf.ims.example.net;1800001400;7"]',
     '{"Reserve":{"Refused":"CreditLimitReached"}}',
     'dave', 1800001400000),
    -- unknown subscriber CCR-I
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800001450;8|0|', 'reserve',
     '["reserve",{"data":"15559999999","kind":"E164"},{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},"seconds",null,"scscf.ims.example.net;1800001450;8"]',
     '{"Reserve":{"Refused":"UnknownSubscriber"}}',
     NULL, 1800001450000),
    -- IEC dave
    ('16:mmsc.example.net|29:mmsc.example.net;1800001500;9|0|', 'direct_debit',
     '["direct_debit",{"data":"15550000004","kind":"E164"},{"rating_group":null,"service_context":"32270@3gpp.org","service_id":null},"units",1]',
     '{"DirectDebit":{"Refused":"CreditLimitReached"}}',
     NULL, 1800001500000),
    -- s-004 CCR-I
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|0|', 'reserve',
     '["reserve",{"data":"15550000002","kind":"E164"},{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},"seconds",120,"scscf.ims.example.net;1800002000;4"]',
     '{"Reserve":{"Granted":{"units":120,"from_allowance":120,"amount":0,"final_grant":false,"expires_at":1800002600000}}}',
     'bob', 1800002000000),
    -- s-004 CCR-U 1
    ('21:scscf.ims.example.net|34:scscf.ims.example.net;1800002000;4|1|', 'commit',
     '["commit","scscf.ims.example.net;1800002000;4",{"rating_group":null,"service_context":"32260@3gpp.org","service_id":null},100,300,true,false]',
     '{"Commit":{"Committed":{"charged":0,"from_allowance":100,"unbilled":0,"next":{"Granted":{"units":300,"from_allowance":200,"amount":100,"final_grant":false,"expires_at":1800002690000}},"session_open":null}}}',
     'bob', 1800002090000);
