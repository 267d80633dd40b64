CREATE DATABASE IF NOT EXISTS analytics;

CREATE TABLE IF NOT EXISTS analytics.schema_migrations
(
    version UInt32,
    description String,
    applied_at DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY version;

CREATE TABLE IF NOT EXISTS analytics.events
(
    workspace_id LowCardinality(String),
    domain LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    name LowCardinality(String),
    hostname LowCardinality(String),
    pathname String,
    visitor_id UInt64,
    retention_days UInt16,
    referrer String,
    referrer_source LowCardinality(String),
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String),
    utm_content String,
    utm_term String,
    click_id_param LowCardinality(String),
    country_code LowCardinality(String),
    region LowCardinality(String),
    city LowCardinality(String),
    browser LowCardinality(String),
    browser_version LowCardinality(String),
    os LowCardinality(String),
    os_version LowCardinality(String),
    device LowCardinality(String),
    interactive Bool,
    revenue_amount Float64,
    revenue_currency LowCardinality(String),
    props Map(LowCardinality(String), String),
    batch_token LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (workspace_id, toDate(ts), visitor_id, ts)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 0, non_replicated_deduplication_window = 1000;

INSERT INTO analytics.schema_migrations (version, description) VALUES (1, 'analytics database, events table');
