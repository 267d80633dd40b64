package salt

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/salt/redistest"
)

func TestMain(m *testing.M) {
	// go-redis logs dial failures through a process-wide logger; the outage
	// tests provoke many of them on purpose.
	redis.SetLogger(discardLogging{})
	if url := os.Getenv(helperEnv); url != "" {
		os.Exit(helperProcess(url))
	}
	os.Exit(m.Run())
}

type discardLogging struct{}

func (discardLogging) Printf(context.Context, string, ...any) {}

var benchSink uint64

// BenchmarkBaseline is the empty loop the others are compared with.
func BenchmarkBaseline(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSink++
	}
}

func BenchmarkVisitorID(b *testing.B) {
	s := randomSalt(20000)
	ip := netip.MustParseAddr("2001:db8::1")
	ua := []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36")
	b.ReportAllocs()
	b.SetBytes(int64(len("ws_acme") + len("acme.example") + 16 + len(ua)))
	for b.Loop() {
		benchSink += s.VisitorID("ws_acme", "acme.example", ip, ua)
	}
}

// BenchmarkSaltAndVisitorID is the per-event cost: cached salt lookup for
// the receive time, then the hash.
func BenchmarkSaltAndVisitorID(b *testing.B) {
	ip := netip.MustParseAddr("2001:db8::1")
	ua := []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36")
	now := time.Now()
	l, err := NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	addr, _ := redistest.Start(b)
	r, err := NewRedis(b.Context(), "redis://"+addr)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, src := range []struct {
		name string
		s    Source
	}{{"local", l}, {"redis", r}} {
		b.Run(src.name+"/lookup", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := src.s.Salt(now)
				if err != nil {
					b.Fatal(err)
				}
				benchSink += s.k0
			}
		})
		b.Run(src.name+"/lookup+hash", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := src.s.Salt(now)
				if err != nil {
					b.Fatal(err)
				}
				benchSink += s.VisitorID("ws_acme", "acme.example", ip, ua)
			}
		})
	}
}
