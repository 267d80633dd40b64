package startline

import "testing"

func TestAddr(t *testing.T) {
	tests := []struct{ name, logs, want string }{
		{"none yet", `{"level":"INFO","msg":"chdb engine opened"}` + "\n", ""},
		{"started", `{"level":"INFO","msg":"chdb engine opened"}` + "\n" +
			`{"time":"2026-11-24T10:00:00Z","level":"INFO","msg":"collector started","listen":"127.0.0.1:40123","tls":false}` + "\n", "127.0.0.1:40123"},
		{"line still being written", `{"level":"INFO","msg":"collector started","listen":"127.0.0.1:401`, ""},
		{"not JSON", "collector started listen=127.0.0.1:1\n", ""},
		{"other message naming listen", `{"msg":"pprof listening","listen":"127.0.0.1:6060"}` + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Addr(tt.logs); got != tt.want {
				t.Fatalf("Addr = %q, want %q", got, tt.want)
			}
		})
	}
}
