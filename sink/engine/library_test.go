package engine

import "testing"

// TestMissingLibrary: without the library, the launcher fails with one sentence that says how
// to get it.
func TestMissingLibrary(t *testing.T) {
	_, err := load("/nonexistent/libchdb.so")
	if err == nil {
		t.Fatal("want an error")
	}
	want := "embedded ClickHouse engine not found at /nonexistent/libchdb.so: run `make deps` or set CHDB_LIB_PATH"
	if err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}
