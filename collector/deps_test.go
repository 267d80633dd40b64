package collector

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestLinksNoStorageDriver keeps the arrows one way: the HTTP side encodes rows with package
// sink/row and hands them to the spool, so it must not link a ClickHouse driver or the engine
// binding. A new import of package sink (or of anything that reaches a driver) fails here.
func TestLinksNoStorageDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	driver := regexp.MustCompile(`clickhouse|purego|chdb`)
	var linked []string
	for _, pkg := range strings.Fields(string(out)) {
		if driver.MatchString(pkg) {
			linked = append(linked, pkg)
		}
	}
	if len(linked) > 0 {
		t.Errorf("package collector links storage drivers (go list -deps .):\n%s", strings.Join(linked, "\n"))
	}
	if !strings.Contains(string(out), "github.com/kyomi/collector/sink/row") {
		t.Errorf("go list -deps . does not list sink/row; the check above proves nothing:\n%s", out)
	}
}
