-- Cluster set-up run once by an administrator (clickhouse-client on any node), before the
-- collectors start. The analytics database, the events_local ReplicatedMergeTree tables and the
-- Distributed events table are NOT created here: every collector runs the schema migrations of
-- the sink package at start (ON CLUSTER analytics when started with -clickhouse-cluster analytics),
-- and `go doc github.com/kyomi/collector/sink MigrationSQL` prints them for review.

-- Check that all four servers see the cluster and Keeper.
SELECT cluster, shard_num, replica_num, host_name, port FROM system.clusters WHERE cluster = 'analytics';
SELECT name FROM system.zookeeper WHERE path = '/';

-- The collector's account: it runs the migrations (CREATE), writes events (INSERT), reads for
-- the query path (SELECT), changes retention and erases workspaces (ALTER UPDATE / DELETE),
-- and nothing outside the analytics database.
CREATE USER IF NOT EXISTS collector ON CLUSTER analytics
    IDENTIFIED WITH sha256_password BY 'CHANGE-ME'
    HOST ANY
    SETTINGS PROFILE 'default';
GRANT ON CLUSTER analytics
    CREATE DATABASE ON analytics.*,
    CREATE TABLE ON analytics.*,
    ALTER UPDATE, ALTER DELETE, ALTER ADD COLUMN, ALTER MODIFY COLUMN, ALTER MODIFY TTL ON analytics.*,
    INSERT, SELECT ON analytics.*,
    REMOTE ON *.*
    TO collector;

-- Query-path limits that the query text cannot raise (the collector also sets them per query
-- and its SQL guard rejects SETTINGS clauses; this is defence in depth).
CREATE SETTINGS PROFILE IF NOT EXISTS collector_queries ON CLUSTER analytics SETTINGS
    max_execution_time = 30 MAX 60,
    max_result_rows = 100000 MAX 100000,
    max_memory_usage = 4000000000 MAX 4000000000
    TO collector;
