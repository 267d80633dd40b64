package query

import (
	"context"
	"testing"
)

func TestProbeBytes(t *testing.T) {
	base := "WITH events AS (SELECT * EXCEPT (batch_token) FROM analytics.events WHERE workspace_id = 'ws_a') SELECT * FROM (SELECT arrayJoin(range(10000)) AS a, repeat('z', 20000) AS b)"
	for _, q := range []string{
		base + " SETTINGS max_result_rows=10001, result_overflow_mode='throw', max_result_bytes=67108864",
		base + " SETTINGS limit=10001, max_result_rows=10001, result_overflow_mode='throw', max_result_bytes=67108864",
		base + " LIMIT 10001 SETTINGS max_result_rows=10001, result_overflow_mode='throw', max_result_bytes=67108864, max_block_size=100",
		base + " SETTINGS max_result_rows=10001, result_overflow_mode='throw', max_result_bytes=67108864, max_block_size=100",
	} {
		res, err := testStore.Select(context.Background(), q, nil)
		if err != nil {
			t.Logf("ERR %.300v", err)
			continue
		}
		n := 0
		for _, r := range res.Rows {
			n += len(r[1].(string))
		}
		t.Logf("rows %d bytes %d", len(res.Rows), n)
	}
}
