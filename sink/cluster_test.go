package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/engine/enginetest"
	"github.com/kyomi/collector/sink/row/rowtest"
)

// TestOnClusterMigrationsParse: the cluster-mode statements (ON CLUSTER, ReplicatedMergeTree,
// Distributed) are valid ClickHouse SQL for the engine's parser (formatQuery). Running them needs
// clickhouse-server with ZooKeeper or Keeper, which cannot run here.
func TestOnClusterMigrationsParse(t *testing.T) {
	c := SchemaConfig{Cluster: "kyomi"}
	stmts, err := MigrationSQL(c)
	if err != nil {
		t.Fatal(err)
	}
	stmts = append(stmts, mergePolicy(c))
	for _, q := range stmts {
		res, err := testStore.Select(context.Background(), "SELECT formatQuery("+QuoteString(q)+")", nil)
		if err != nil {
			t.Fatalf("%s\n: %v", q, err)
		}
		if f, _ := res.Rows[0][0].(string); !strings.HasPrefix(q, "INSERT") && !strings.Contains(f, "ON CLUSTER kyomi") {
			t.Fatalf("formatted statement lost its ON CLUSTER: %s", f)
		}
	}
}

// TestDistributedCluster runs a 2-shard cluster of two servers (remote_servers) with the schema
// an operator would make by hand (MergeTree events_local on each shard, since
// ReplicatedMergeTree needs clickhouse-server, and a Distributed events over them): VerifySchema
// accepts it, inserts through the Distributed table land on both shards by
// cityHash64(workspace_id), reads through it see every shard, and a shard whose table lacks a
// column is refused with a clear error.
func TestDistributedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	single, err := MigrationSQL(SchemaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := enginetest.StartOperatorCluster("kyomi_test", 2, Database, single)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	shards := make([]*Server, len(c.Shards))
	for i, srv := range c.Shards {
		if shards[i], err = OpenServer(srv.DSN("default")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shards[i].Close() })
	}
	cluster := SchemaConfig{Cluster: "kyomi_test"}
	if err := VerifySchema(ctx, shards[0], cluster); err != nil {
		t.Fatalf("operator schema refused: %v", err)
	}
	if err := VerifySchema(ctx, shards[0], SchemaConfig{}); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("a Distributed table verified as a single server's: %v", err)
	}

	const workspaces, per = 20, 10
	for w := range workspaces {
		ws := fmt.Sprintf("ws_shard_%02d", w)
		if err := shards[w%2].Insert(ctx, rowtest.Events(ws, per, time.Now().UTC(), 30), "cluster-"+ws); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i, s := range shards {
		res, err := s.Select(ctx, fmt.Sprintf("SELECT count(), countIf(cityHash64(workspace_id) %% 2 != %d) FROM %s.events_local", i, Database), nil)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := asUint64(res.Rows[0][0])
		wrong, _ := asUint64(res.Rows[0][1])
		if n == 0 || wrong != 0 {
			t.Fatalf("shard %d holds %d rows, %d of them of the other shard's workspaces", i+1, n, wrong)
		}
		total += int(n)
	}
	if total != workspaces*per {
		t.Fatalf("shards hold %d rows, want %d", total, workspaces*per)
	}
	for _, s := range shards {
		res, err := s.Select(ctx, "SELECT count(), uniqExact(workspace_id) FROM "+Database+".events", nil)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := asUint64(res.Rows[0][0])
		u, _ := asUint64(res.Rows[0][1])
		if n != workspaces*per || u != workspaces {
			t.Fatalf("through the Distributed table: %d rows of %d workspaces, want %d of %d", n, u, workspaces*per, workspaces)
		}
	}

	if err := shards[1].Exec(ctx, "ALTER TABLE "+Database+".events_local DROP COLUMN city"); err != nil {
		t.Fatal(err)
	}
	err = VerifySchema(ctx, shards[1], cluster)
	if !errors.Is(err, ErrSchemaMismatch) || !strings.Contains(err.Error(), "events_local lacks column city String") {
		t.Fatalf("a shard without the city column: %v", err)
	}
}
