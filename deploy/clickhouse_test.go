package deploy

import (
	"encoding/xml"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kyomi/collector/sink"
)

type xmlNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xmlNode  `xml:",any"`
}

func (n xmlNode) all(name string) []xmlNode {
	var out []xmlNode
	for _, c := range n.Children {
		if c.XMLName.Local == name {
			out = append(out, c)
		}
	}
	return out
}

func (n xmlNode) child(t *testing.T, path ...string) xmlNode {
	t.Helper()
	cur := n
	for _, p := range path {
		cs := cur.all(p)
		if len(cs) != 1 {
			t.Fatalf("<%s> has %d <%s> elements, want 1", cur.XMLName.Local, len(cs), p)
		}
		cur = cs[0]
	}
	return cur
}

func (n xmlNode) text(t *testing.T, path ...string) string {
	t.Helper()
	return strings.TrimSpace(n.child(t, path...).Text)
}

func readXML(t *testing.T, path string) xmlNode {
	t.Helper()
	var n xmlNode
	if err := xml.Unmarshal(readFile(t, path), &n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if n.XMLName.Local != "clickhouse" {
		t.Fatalf("%s: root element <%s>, want <clickhouse>", path, n.XMLName.Local)
	}
	return n
}

func TestClickHouseCluster(t *testing.T) {
	rs := readXML(t, "clickhouse/config.d/remote_servers.xml").child(t, "remote_servers")
	if len(rs.Children) != 1 {
		t.Fatalf("want one cluster, got %d", len(rs.Children))
	}
	cluster := rs.Children[0]
	name := cluster.XMLName.Local
	shards := cluster.all("shard")
	if len(shards) != 2 {
		t.Fatalf("cluster %s has %d shards, want 2", name, len(shards))
	}
	replicas := map[string]string{} // host -> shard number
	for i, s := range shards {
		if s.text(t, "internal_replication") != "true" {
			t.Errorf("shard %d: internal_replication must be true with ReplicatedMergeTree", i+1)
		}
		rs := s.all("replica")
		if len(rs) != 2 {
			t.Fatalf("shard %d has %d replicas, want 2", i+1, len(rs))
		}
		for _, r := range rs {
			replicas[r.text(t, "host")] = strconv.Itoa(i + 1)
		}
	}

	t.Run("macros", func(t *testing.T) {
		files, _ := filepath.Glob("clickhouse/macros/*.xml")
		if len(files) != len(replicas) {
			t.Fatalf("%d macros files for %d replicas", len(files), len(replicas))
		}
		seen := map[string]bool{}
		for _, f := range files {
			m := readXML(t, f).child(t, "macros")
			host := m.text(t, "replica")
			if replicas[host] == "" || replicas[host] != m.text(t, "shard") || m.text(t, "cluster") != name {
				t.Errorf("%s: replica %s shard %s cluster %s do not match remote_servers.xml", f, host, m.text(t, "shard"), m.text(t, "cluster"))
			}
			if !strings.HasPrefix(filepath.Base(f), strings.TrimSuffix(host, ".internal")) {
				t.Errorf("%s holds the macros of %s", f, host)
			}
			seen[host] = true
		}
		if len(seen) != len(replicas) {
			t.Errorf("macros cover %v, replicas are %v", seen, replicas)
		}
	})

	t.Run("keeper", func(t *testing.T) {
		ks := readXML(t, "clickhouse/config.d/keeper.xml").child(t, "keeper_server")
		servers := ks.child(t, "raft_configuration").all("server")
		if len(servers) != 3 {
			t.Fatalf("%d Keeper voters, want 3 (tolerates one failure)", len(servers))
		}
		port := ks.text(t, "tcp_port")
		var keeperHosts []string
		for _, s := range servers {
			keeperHosts = append(keeperHosts, net.JoinHostPort(s.text(t, "hostname"), port))
			if replicas[s.text(t, "hostname")] == "" {
				t.Errorf("Keeper voter %s is not a cluster server", s.text(t, "hostname"))
			}
		}
		var zkHosts []string
		for _, n := range readXML(t, "clickhouse/config.d/zookeeper.xml").child(t, "zookeeper").all("node") {
			zkHosts = append(zkHosts, net.JoinHostPort(n.text(t, "host"), n.text(t, "port")))
		}
		if !slices.Equal(slices.Sorted(slices.Values(zkHosts)), slices.Sorted(slices.Values(keeperHosts))) {
			t.Errorf("servers look for Keeper at %v, Keeper runs at %v", zkHosts, keeperHosts)
		}
	})

	t.Run("migrations use this cluster and its macros", func(t *testing.T) {
		stmts, err := sink.MigrationSQL(sink.SchemaConfig{Cluster: name})
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(stmts, "\n")
		for _, want := range []string{"{shard}", "{replica}", "Distributed('" + name + "'", "ReplicatedMergeTree"} {
			if !strings.Contains(all, want) {
				t.Errorf("the migrations for cluster %s do not contain %q", name, want)
			}
		}
		grants := string(readFile(t, "clickhouse/cluster.sql"))
		for _, s := range stmts {
			if (strings.HasPrefix(s, "CREATE") || strings.HasPrefix(s, "ALTER")) && !strings.Contains(s, "ON CLUSTER `"+name+"`") {
				t.Errorf("statement runs on one node only: %.80s", s)
			}
			// Every kind of ALTER a migration runs is granted to the collector's account.
			for _, kind := range []string{"ADD COLUMN", "MODIFY COLUMN"} {
				if strings.HasPrefix(s, "ALTER") && strings.Contains(s, kind) && !strings.Contains(grants, "ALTER "+kind) {
					t.Errorf("a migration runs ALTER %s, which cluster.sql does not grant: %.80s", kind, s)
				}
			}
		}
		if sql := string(readFile(t, "clickhouse/cluster.sql")); regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?[a-z_]+\.`).MatchString(sql) {
			t.Error("cluster.sql creates tables; the schema belongs to the sink migrations")
		}
	})
}
