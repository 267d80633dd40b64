package salt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/salt/redistest"
)

// helperEnv makes the test binary act as a collector process: it opens a
// Redis source on the URL in the variable and prints the visitor id of a
// fixed event received now.
const helperEnv = "SALT_TEST_HELPER_REDIS_URL"

func helperProcess(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := NewRedis(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	s, err := r.Salt(time.Now())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%016x\n", s.VisitorID("ws_acme", "acme.example", testIP, testUA))
	return 0
}

// Two separate processes sharing one Redis give the same visitor id.
func TestRedisTwoProcesses(t *testing.T) {
	addr, _ := redistest.Start(t)
	url := "redis://" + addr
	ids := make([]string, 2)
	for i := range ids {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+url)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
		ids[i] = strings.TrimSpace(string(out))
	}
	if len(ids[0]) != 16 || ids[0] != ids[1] {
		t.Fatalf("processes printed %q and %q, want one 16-digit id", ids[0], ids[1])
	}
	// And this process, a third node, agrees too.
	n := newNode(t, url, newFakeClock(time.Now()))
	s, err := n.Salt(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%016x", s.VisitorID("ws_acme", "acme.example", testIP, testUA)); got != ids[0] {
		t.Fatalf("in-process id %s, processes %s", got, ids[0])
	}
}
