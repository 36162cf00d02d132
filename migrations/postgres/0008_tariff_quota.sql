-- How a client is to use up a grant, per tariff (TS 32.299 §7.2): the threshold at which it
-- asks again (in the tariff's unit: Time-, Volume- or Unit-Quota-Threshold), Quota-Holding-Time
-- and Quota-Consumption-Time, in seconds, and the grant's Validity-Time (which sets the
-- reservation's Tcc) in place of the server's. NULL: not sent (or the server's).
ALTER TABLE tariffs ADD COLUMN quota_threshold BIGINT;
ALTER TABLE tariffs ADD COLUMN quota_holding_time_s BIGINT;
ALTER TABLE tariffs ADD COLUMN quota_consumption_time_s BIGINT;
ALTER TABLE tariffs ADD COLUMN validity_time_s BIGINT;
