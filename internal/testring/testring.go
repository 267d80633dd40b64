// Package testring gives the collector processes that a test binary starts a spool ring
// directory of their own. A test that kills a collector (SIGKILL, or its cleanup) leaves the
// ring's file behind, as a crash must; in /dev/shm itself those files would outlive the test.
package testring

import (
	"fmt"
	"os"
)

// Env is the variable that sets the collector's -spool-ring-dir.
const Env = "COLLECTOR_SPOOL_RING_DIR"

// Setup creates a directory on /dev/shm (the temporary directory when there is none), sets Env
// to it for this process and the processes it starts, and returns a function that removes it.
func Setup() (remove func(), err error) {
	parent := "/dev/shm"
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "kyomi-test-ring-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a ring directory for the test's collectors: %w", err)
	}
	if err := os.Setenv(Env, dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot set %s: %w", Env, err)
	}
	return func() { os.RemoveAll(dir) }, nil
}
