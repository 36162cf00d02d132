-- Per-tariff quota thresholds and times; see migrations/postgres/0008_tariff_quota.sql.
ALTER TABLE tariffs ADD COLUMN quota_threshold INTEGER;
ALTER TABLE tariffs ADD COLUMN quota_holding_time_s INTEGER;
ALTER TABLE tariffs ADD COLUMN quota_consumption_time_s INTEGER;
ALTER TABLE tariffs ADD COLUMN validity_time_s INTEGER;
ALTER TABLE tariffs ADD COLUMN final_unit_action TEXT NOT NULL DEFAULT 'terminate'
    CHECK (final_unit_action IN ('terminate', 'redirect', 'restrict_access'));
ALTER TABLE tariffs ADD COLUMN redirect_address TEXT;
ALTER TABLE tariffs ADD COLUMN filter_id TEXT;
