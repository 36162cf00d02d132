-- Per-tariff quota thresholds and times; see migrations/postgres/0008_tariff_quota.sql.
ALTER TABLE tariffs ADD COLUMN quota_threshold INTEGER;
ALTER TABLE tariffs ADD COLUMN quota_holding_time_s INTEGER;
ALTER TABLE tariffs ADD COLUMN quota_consumption_time_s INTEGER;
ALTER TABLE tariffs ADD COLUMN validity_time_s INTEGER;
