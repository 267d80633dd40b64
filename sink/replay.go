package sink

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/kyomi/collector/sink/row"
)

// replayInsert stores the batch rows named token exactly once, whether or not an earlier
// process stored it before it was killed, with insert(ctx, rows, dedupToken, batchToken).
//
// A deduplication log cannot answer that alone: the managed engine dies with the collector, a
// server may have been killed in the middle of the insert too, and a SIGKILL in the middle of an
// insert can leave the token recorded without its part (the
// replay would then be dropped: data loss) or the part without its token (a duplicate), both seen
// in TestReplayAfterSIGKILLStoresOnce. So the rows carry their batch's token in the batch_token
// column, and a replay counts what is stored under it per partition (each partition of an insert
// is one part, committed whole or not at all) and inserts only the rows of partitions that have
// none, under a fresh deduplication token.
func replayInsert(ctx context.Context, s Store, insert func(ctx context.Context, rows []row.Event, dedupToken, batchToken string) error, rows []row.Event, token string) error {
	if len(rows) == 0 {
		return nil
	}
	if err := checkDedupToken(token); err != nil {
		return err
	}
	lo, hi := rows[0].TS, rows[0].TS
	for i := range rows {
		lo, hi = minTime(lo, rows[i].TS), maxTime(hi, rows[i].TS)
	}
	res, err := s.Select(ctx, "SELECT toYYYYMM(ts), count() FROM "+Database+".events WHERE batch_token = "+QuoteString(token)+
		" AND ts >= fromUnixTimestamp64Milli("+strconv.FormatInt(lo.UnixMilli(), 10)+", 'UTC')"+
		" AND ts <= fromUnixTimestamp64Milli("+strconv.FormatInt(hi.UnixMilli(), 10)+", 'UTC') GROUP BY 1", nil)
	if err != nil {
		return fmt.Errorf("cannot check which rows of batch %s are stored: %w", token, err)
	}
	stored := make(map[uint64]bool, len(res.Rows))
	for _, r := range res.Rows {
		p, err := asUint64(r[0])
		if err != nil {
			return fmt.Errorf("cannot check which rows of batch %s are stored: %w", token, err)
		}
		stored[p] = true
	}
	missing := make([]row.Event, 0, len(rows))
	for _, e := range rows {
		if !stored[yearMonth(e.TS)] {
			missing = append(missing, e)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// A fresh token: the crashed process may have recorded the batch's own token without its rows.
	return insert(ctx, missing, token+".r"+strconv.FormatInt(time.Now().UnixNano(), 36), token)
}

// yearMonth is toYYYYMM(ts), the partition of a row.
func yearMonth(t time.Time) uint64 {
	t = t.UTC()
	return uint64(t.Year())*100 + uint64(t.Month())
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
