package salt

import (
	"testing"

	"github.com/dchest/siphash"
)

func BenchmarkDchestRef(b *testing.B) {
	msg := make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		benchSink += siphash.Hash(1, 2, msg)
	}
}
