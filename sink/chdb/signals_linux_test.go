package chdb

import (
	"context"
	"testing"
)

// TestSignalHandlersKept checks that the handlers the Go runtime installed
// are still in place after the engine started and ran queries.
func TestSignalHandlersKept(t *testing.T) {
	if _, err := testConn.Query(context.Background(), "SELECT 1", "TSV"); err != nil {
		t.Fatal(err)
	}
	now := saveSignals()
	for i, s := range guardedSignals {
		if now[i] != goSignals[i] {
			t.Errorf("handler of %v changed: %+v, was %+v", s, now[i], goSignals[i])
		}
	}
}
