package salt

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dchest/siphash"
)

// fakeClock is an injectable clock for WithClock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// reference computes the visitor id the documented way: the whole message
// concatenated and hashed by github.com/dchest/siphash.
func reference(s *Salt, ws, domain string, ip netip.Addr, ua []byte) uint64 {
	var msg []byte
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(ws)))
	msg = append(msg, ws...)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(domain)))
	msg = append(msg, domain...)
	a := ip.As16()
	msg = append(msg, a[:]...)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(ua)))
	msg = append(msg, ua...)
	k0 := binary.LittleEndian.Uint64(s.b[0:8]) ^ binary.LittleEndian.Uint64(s.b[16:24])
	k1 := binary.LittleEndian.Uint64(s.b[8:16]) ^ binary.LittleEndian.Uint64(s.b[24:32])
	return siphash.Hash(k0, k1, msg)
}

func TestSipStateMatchesDchest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		k0, k1 := rng.Uint64(), rng.Uint64()
		want := siphash.Hash(k0, k1, msg)
		// Feed in random chunks, alternating string and []byte.
		var h sipState
		h.init(k0, k1)
		for rest := msg; len(rest) > 0; {
			c := 1 + rng.IntN(len(rest))
			if c%2 == 0 {
				h.writeString(string(rest[:c]))
			} else {
				h.write(rest[:c])
			}
			rest = rest[c:]
		}
		if got := h.sum(); got != want {
			t.Fatalf("len %d: sipState %x, dchest/siphash %x", n, got, want)
		}
	}
}

func TestVisitorID(t *testing.T) {
	s1 := randomSalt(20000)
	s2 := randomSalt(20000)
	v4 := netip.MustParseAddr("192.0.2.1")
	v4mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	ua := []byte("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
	type in struct {
		s     *Salt
		ws, d string
		ip    netip.Addr
		ua    []byte
	}
	base := in{s1, "ws_acme", "acme.example", v4, ua}
	tests := []struct {
		name string
		a, b in
		same bool
	}{
		{"identical inputs", base, base, true},
		{"ipv4 and its mapped form", base, in{s1, "ws_acme", "acme.example", v4mapped, ua}, true},
		{"other salt", base, in{s2, "ws_acme", "acme.example", v4, ua}, false},
		{"other workspace", base, in{s1, "ws_other", "acme.example", v4, ua}, false},
		{"other domain", base, in{s1, "ws_acme", "www.acme.example", v4, ua}, false},
		{"other ip", base, in{s1, "ws_acme", "acme.example", v6, ua}, false},
		{"other ua", base, in{s1, "ws_acme", "acme.example", v4, []byte("curl/8")}, false},
		{"boundary moved between workspace and domain", in{s1, "ab", "c", v4, ua}, in{s1, "a", "bc", v4, ua}, false},
		{"boundary moved between domain and ua", in{s1, "w", "d", v4, []byte("x")}, in{s1, "w", "dx", v4, nil}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a.s.VisitorID(tc.a.ws, tc.a.d, tc.a.ip, tc.a.ua)
			b := tc.b.s.VisitorID(tc.b.ws, tc.b.d, tc.b.ip, tc.b.ua)
			if (a == b) != tc.same {
				t.Fatalf("ids %x and %x: same=%v, want %v", a, b, a == b, tc.same)
			}
			if ref := reference(tc.a.s, tc.a.ws, tc.a.d, tc.a.ip, tc.a.ua); ref != a {
				t.Fatalf("id %x differs from the documented encoding hashed by dchest/siphash %x", a, ref)
			}
		})
	}
}

func TestVisitorIDDoesNotAllocate(t *testing.T) {
	s := randomSalt(20000)
	ip := netip.MustParseAddr("2001:db8::1")
	ua := []byte(strings.Repeat("Mozilla/5.0 ", 40))
	if n := testing.AllocsPerRun(100, func() { s.VisitorID("ws_acme", "acme.example", ip, ua) }); n != 0 {
		t.Fatalf("VisitorID allocates %v times per call", n)
	}
}

func TestDay(t *testing.T) {
	tests := []struct {
		name string
		in   string
		day  string
		key  string
	}{
		{"midday", "2026-11-23T12:00:00Z", "2026-11-23T00:00:00Z", "2026-11-23"},
		{"exact midnight", "2026-11-24T00:00:00Z", "2026-11-24T00:00:00Z", "2026-11-24"},
		{"last nanosecond", "2026-11-23T23:59:59.999999999Z", "2026-11-23T00:00:00Z", "2026-11-23"},
		{"offset zone is converted to UTC", "2026-11-24T01:30:00+02:00", "2026-11-23T00:00:00Z", "2026-11-23"},
		{"before 1970", "1969-12-31T23:00:00Z", "1969-12-31T00:00:00Z", "1969-12-31"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := mustTime(t, tc.in)
			if got := Day(in); !got.Equal(mustTime(t, tc.day)) || got.Location() != time.UTC {
				t.Errorf("Day(%s) = %s, want %s UTC", tc.in, got, tc.day)
			}
			if got := DayKey(in); got != tc.key {
				t.Errorf("DayKey(%s) = %s, want %s", tc.in, got, tc.key)
			}
			if got := randomSalt(dayNumber(in)).Day(); !got.Equal(mustTime(t, tc.day)) {
				t.Errorf("Salt.Day = %s, want %s", got, tc.day)
			}
		})
	}
}

// secretForms returns the spellings in which a salt's bytes could leak.
func secretForms(s *Salt) map[string][]byte {
	b := s.b[:]
	return map[string][]byte{
		"raw":          b,
		"hex":          []byte(hex.EncodeToString(b)),
		"HEX":          []byte(strings.ToUpper(hex.EncodeToString(b))),
		"base64":       []byte(base64.StdEncoding.EncodeToString(b)),
		"base64url":    []byte(base64.RawURLEncoding.EncodeToString(b)),
		"hex prefix":   []byte(hex.EncodeToString(b[:8])),
		"decimal list": []byte(strings.Trim(fmt.Sprint(b[:4]), "[]")),
	}
}

// assertNoSecret fails if out contains s's bytes in any spelling.
func assertNoSecret(t testing.TB, what string, out []byte, salts ...*Salt) {
	t.Helper()
	for _, s := range salts {
		for form, v := range secretForms(s) {
			if bytes.Contains(out, v) {
				t.Fatalf("%s contains the salt (%s)", what, form)
			}
		}
	}
}

func TestSaltIsRedacted(t *testing.T) {
	s := randomSalt(20000)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	logger.Info("salt", "ptr", s, "val", *s)
	js, err := json.Marshal(map[string]any{"ptr": s, "val": *s})
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := s.MarshalText()
	outs := map[string][]byte{"slog json": logs.Bytes(), "json": js, "text": txt}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs[verb+" pointer"] = fmt.Appendf(nil, verb, s)
		outs[verb+" value"] = fmt.Appendf(nil, verb, *s)
		outs[verb+" in struct"] = fmt.Appendf(nil, verb, struct{ S Salt }{*s})
	}
	for name, out := range outs {
		t.Run(name, func(t *testing.T) {
			assertNoSecret(t, name, out, s)
			if !bytes.Contains(out, []byte(redacted)) {
				t.Fatalf("%s = %q, want it to say %s", name, out, redacted)
			}
		})
	}
}

// withManualRefresh starts no background loop: the test calls refresh
// itself, so the order of Redis operations between nodes is the test's.
func withManualRefresh() Option { return func(c *config) { c.manual = true } }
