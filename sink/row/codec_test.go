package row_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

func TestCodecRoundTrip(t *testing.T) {
	full := rowtest.Events("ws_codec", 1, time.Date(2026, 11, 23, 14, 0, 0, 123e6, time.UTC), 395)[0]
	tests := []struct {
		name string
		ev   row.Event
	}{
		{"all fields", full},
		{"zero event", row.Event{TS: time.UnixMilli(0).UTC()}},
		{"negative time and max values", row.Event{TS: time.Date(1969, 1, 1, 0, 0, 0, 5e6, time.UTC),
			VisitorID: math.MaxUint64, RetentionDays: math.MaxUint16, RevenueAmount: -1.5,
			ScrollDepth: row.NoScrollDepth, EngagementTime: math.MaxUint32, TrackerVersion: math.MaxUint16}},
		{"long strings", row.Event{TS: time.UnixMilli(1).UTC(), Pathname: string(make([]byte, 70000)),
			PropKeys: []string{"", "k"}, PropValues: []string{"v", ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.ev.AppendBinary(nil)
			var got row.Event
			if err := row.DecodeEvent(rec, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.ev) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.ev)
			}
			// Decoded strings must not alias the record.
			for i := range rec {
				rec[i] = 0xff
			}
			if !reflect.DeepEqual(got, tc.ev) {
				t.Error("decoded event changed when the record buffer was overwritten")
			}
		})
	}
}

func TestCodecTruncatesSubMillisecond(t *testing.T) {
	ev := row.Event{TS: time.Date(2026, 1, 2, 3, 4, 5, 678912345, time.UTC)}
	var got row.Event
	if err := row.DecodeEvent(ev.AppendBinary(nil), &got); err != nil {
		t.Fatal(err)
	}
	if want := ev.TS.Truncate(time.Millisecond); !got.TS.Equal(want) {
		t.Errorf("TS %v, want %v", got.TS, want)
	}
}

func TestDecodeEventRejectsGarbage(t *testing.T) {
	good := rowtest.Events("ws_codec", 1, time.Unix(1700000000, 0), 30)[0].AppendBinary(nil)
	tests := []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(append([]byte{}, good...), 0)},
		{"header only", good[:5]},
		{"bad flags", func() []byte {
			e := row.Event{TS: time.Unix(0, 0)}
			b := e.AppendBinary(nil)
			b[1+1+8+1] = 0x80 // flags byte after version, ts(1), visitor(8), days(1)
			return b
		}()},
		{"huge string length", append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"random bytes", []byte("\x01this is not an event at all, just text")},
		{"scroll depth out of range", func() []byte {
			e := row.Event{TS: time.Unix(0, 0)}
			b := e.AppendBinary(nil)
			b[1+1+8+1+1+8] = 101 // scroll depth after flags and revenue
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e row.Event
			err := row.DecodeEvent(tc.rec, &e)
			if !errors.Is(err, row.ErrCorruptEvent) {
				t.Errorf("DecodeEvent() = %v, want ErrCorruptEvent", err)
			}
		})
	}
}

// TestDecodeVersion1 reads a record in the layout of codec version 1 (no engagement fields), as a
// spool written before the upgrade holds them: the event decodes with the new fields zero.
func TestDecodeVersion1(t *testing.T) {
	want := rowtest.Events("ws_codec", 1, time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC), 30)[0]
	want.ScrollDepth, want.EngagementTime, want.TrackerVersion = 0, 0, 0
	rec := want.AppendBinary(nil)
	// Version 2 put scroll depth (1 byte) and two uvarints, one byte each when zero, after the
	// revenue: cut those 3 bytes out.
	at := 1 + len(binary.AppendVarint(nil, want.TS.UnixMilli())) + 8 +
		len(binary.AppendUvarint(nil, uint64(want.RetentionDays))) + 1 + 8
	v1 := append([]byte{row.CodecVersionV1}, rec[1:at]...)
	v1 = append(v1, rec[at+3:]...)
	var got row.Event
	if err := row.DecodeEvent(v1, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("version 1 record:\n got %+v\nwant %+v", got, want)
	}
}

func TestAppendBinaryZeroAllocs(t *testing.T) {
	ev := rowtest.Events("ws_codec", 1, time.Now(), 30)[0]
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = ev.AppendBinary(buf[:0]) }); n != 0 {
		t.Errorf("AppendBinary allocates %v times per call", n)
	}
}

func BenchmarkAppendBinary(b *testing.B) {
	ev := rowtest.Events("ws_codec", 1, time.Now(), 30)[0]
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.AppendBinary(nil))))
	for b.Loop() {
		buf = ev.AppendBinary(buf[:0])
	}
}

// TestDecoderKeepsEveryRow decodes a stream of records, the long one larger
// than a block, into rows kept side by side as the shipper's batch keeps them,
// reusing one record buffer: every row must still equal its event after the
// decoder has moved through several blocks.
func TestDecoderKeepsEveryRow(t *testing.T) {
	evs := rowtest.Events("ws_decoder", 40, time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC), 30)
	evs[7].Pathname = "/" + strings.Repeat("p", row.DecoderBlock+10)
	var (
		dec  row.Decoder
		rows = make([]row.Event, 0, 3*len(evs))
		want []row.Event
		rec  []byte
	)
	for range 3 {
		for _, ev := range evs {
			rec = ev.AppendBinary(rec[:0])
			rows = append(rows, row.Event{})
			if err := dec.Decode(rec, &rows[len(rows)-1]); err != nil {
				t.Fatal(err)
			}
			want = append(want, ev)
			for i := range rec { // the spool reader reuses its buffer
				rec[i] = 0xff
			}
		}
	}
	for i := range rows {
		if !reflect.DeepEqual(rows[i], want[i]) {
			t.Fatalf("row %d changed after later decodes:\n got %+v\nwant %+v", i, rows[i], want[i])
		}
	}
	if err := dec.Decode(nil, &row.Event{}); !errors.Is(err, row.ErrCorruptEvent) {
		t.Errorf("empty record: %v, want ErrCorruptEvent", err)
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	rec := rowtest.Events("ws_codec", 1, time.Now(), 30)[0].AppendBinary(nil)
	var e row.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if err := row.DecodeEvent(rec, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, ev := range rowtest.Events("ws_fuzz", 2, time.Unix(1700000000, 0), 30) {
		f.Add(ev.AppendBinary(nil))
	}
	f.Add((&row.Event{}).AppendBinary(nil))
	f.Fuzz(func(t *testing.T, rec []byte) {
		var e, viaDecoder row.Event
		err := row.DecodeEvent(rec, &e)
		var dec row.Decoder
		if derr := dec.Decode(rec, &viaDecoder); (err == nil) != (derr == nil) {
			t.Fatalf("DecodeEvent: %v; Decoder.Decode: %v", err, derr)
		}
		if err != nil {
			if !errors.Is(err, row.ErrCorruptEvent) {
				t.Fatalf("error does not wrap ErrCorruptEvent: %v", err)
			}
			return
		}
		if !reflect.DeepEqual(e, viaDecoder) {
			t.Fatalf("Decoder.Decode differs from DecodeEvent:\n%+v\n%+v", viaDecoder, e)
		}
		// Whatever decodes must re-encode to an event that decodes equal.
		var again row.Event
		if err := row.DecodeEvent(e.AppendBinary(nil), &again); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("re-encoding changed the event:\n%+v\n%+v", e, again)
		}
	})
}

// TestWriteFuzzSeeds keeps the committed seed corpus in step with the
// codec: run with UPDATE_FUZZ_SEEDS=1 after changing the layout.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("UPDATE_FUZZ_SEEDS") == "" {
		seeds, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecodeEvent", "*"))
		if err != nil || len(seeds) == 0 {
			t.Fatalf("no seed corpus in testdata/fuzz/FuzzDecodeEvent (set UPDATE_FUZZ_SEEDS=1 to write it): %v", err)
		}
		return
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeEvent")
	evs := rowtest.Events("ws_seed", 1, time.Unix(1700000000, 0), 395)
	evs = append(evs, row.Event{TS: time.Unix(0, 0)}, row.Event{TS: time.Unix(1, 0), PropKeys: []string{"a"}, PropValues: []string{"b"}})
	for i, ev := range evs {
		rec := ev.AppendBinary(nil)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", rec)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A truncated record too, so the corpus exercises the error path.
	rec := evs[0].AppendBinary(nil)
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", rec[:len(rec)/2])
	if err := os.WriteFile(filepath.Join(dir, "seed-truncated"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
