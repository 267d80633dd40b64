package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestDebugRot(t *testing.T) {
	dir := t.TempDir()
	s, reg := openSpool(t, Config{Dir: dir, SegmentBytes: 4 << 20})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rec := bytes.Repeat([]byte{byte('a' + w)}, 60<<10)
			for range 20 {
				s.Append(rec)
			}
		})
	}
	wg.Wait()
	got, _ := readAll(t, s, s.Checkpoint())
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, p := range segs {
		st, _ := os.Stat(p)
		fmt.Println(p, st.Size(), st.Size()/(60<<10+16))
	}
	fmt.Println(s.segs, len(got), metricValue(t, reg, "collector_spool_corrupt_records_total"))
}
