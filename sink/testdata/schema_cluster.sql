CREATE DATABASE IF NOT EXISTS analytics ON CLUSTER `kyomi`;

CREATE TABLE IF NOT EXISTS analytics.schema_migrations ON CLUSTER `kyomi`
(
    version UInt32,
    description String,
    applied_at DateTime DEFAULT now()
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/schema_migrations', '{replica}')
ORDER BY version;

CREATE TABLE IF NOT EXISTS analytics.events_local ON CLUSTER `kyomi`
(
    workspace_id String,
    domain String,
    ts DateTime64(3, 'UTC'),
    name String,
    hostname String,
    pathname String,
    visitor_id UInt64,
    retention_days UInt16,
    referrer String,
    referrer_source LowCardinality(String),
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    click_id_param LowCardinality(String),
    country_code LowCardinality(String),
    region String,
    city String,
    browser LowCardinality(String),
    browser_version String,
    os LowCardinality(String),
    os_version String,
    device LowCardinality(String),
    interactive Bool,
    revenue_amount Float64,
    revenue_currency LowCardinality(String),
    props Map(LowCardinality(String), String),
    batch_token String,
    scroll_depth UInt8,
    engagement_time UInt32,
    tracker_version UInt16
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/events_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (workspace_id, toDate(ts), visitor_id, ts)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 0, non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS analytics.events ON CLUSTER `kyomi` AS analytics.events_local
ENGINE = Distributed('kyomi', 'analytics', 'events_local', cityHash64(workspace_id));

INSERT INTO analytics.schema_migrations (version, description) VALUES (1, 'analytics database, events table');

ALTER TABLE analytics.events_local ON CLUSTER `kyomi` MODIFY COLUMN workspace_id String, MODIFY COLUMN domain String, MODIFY COLUMN name String, MODIFY COLUMN hostname String, MODIFY COLUMN utm_source String, MODIFY COLUMN utm_medium String, MODIFY COLUMN utm_campaign String, MODIFY COLUMN region String, MODIFY COLUMN city String, MODIFY COLUMN browser_version String, MODIFY COLUMN os_version String, MODIFY COLUMN batch_token String SETTINGS mutations_sync = 0;

ALTER TABLE analytics.events ON CLUSTER `kyomi` MODIFY COLUMN workspace_id String, MODIFY COLUMN domain String, MODIFY COLUMN name String, MODIFY COLUMN hostname String, MODIFY COLUMN utm_source String, MODIFY COLUMN utm_medium String, MODIFY COLUMN utm_campaign String, MODIFY COLUMN region String, MODIFY COLUMN city String, MODIFY COLUMN browser_version String, MODIFY COLUMN os_version String, MODIFY COLUMN batch_token String;

INSERT INTO analytics.schema_migrations (version, description) VALUES (2, 'open-ended string columns as String');

ALTER TABLE analytics.events_local ON CLUSTER `kyomi` ADD COLUMN IF NOT EXISTS scroll_depth UInt8, ADD COLUMN IF NOT EXISTS engagement_time UInt32, ADD COLUMN IF NOT EXISTS tracker_version UInt16;

ALTER TABLE analytics.events ON CLUSTER `kyomi` ADD COLUMN IF NOT EXISTS scroll_depth UInt8, ADD COLUMN IF NOT EXISTS engagement_time UInt32, ADD COLUMN IF NOT EXISTS tracker_version UInt16;

INSERT INTO analytics.schema_migrations (version, description) VALUES (3, 'engagement and tracker version columns');
