-- How a client is to use up a grant, per tariff (TS 32.299 §7.2): the threshold at which it
-- asks again (in the tariff's unit: Time-, Volume- or Unit-Quota-Threshold), Quota-Holding-Time
-- and Quota-Consumption-Time, in seconds, and the grant's Validity-Time (which sets the
-- reservation's Tcc) in place of the server's. NULL: not sent (or the server's).
ALTER TABLE tariffs ADD COLUMN quota_threshold BIGINT;
ALTER TABLE tariffs ADD COLUMN quota_holding_time_s BIGINT;
ALTER TABLE tariffs ADD COLUMN quota_consumption_time_s BIGINT;
ALTER TABLE tariffs ADD COLUMN validity_time_s BIGINT;

-- What the client does once a final grant is used up (RFC 4006 §5.6, Final-Unit-Action):
-- 'terminate' (the default), 'redirect' to redirect_address (a URL, SIP URI or IP address),
-- or 'restrict_access' to what the client's filter filter_id lets through.
ALTER TABLE tariffs ADD COLUMN final_unit_action TEXT NOT NULL DEFAULT 'terminate'
    CONSTRAINT tariffs_final_unit_action_known
    CHECK (final_unit_action IN ('terminate', 'redirect', 'restrict_access'));
ALTER TABLE tariffs ADD COLUMN redirect_address TEXT;
ALTER TABLE tariffs ADD COLUMN filter_id TEXT;
