package idemsql

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffIsCappedFullJitter(t *testing.T) {
	base, max := 10*time.Millisecond, time.Second
	for attempt := 1; attempt <= 100; attempt++ {
		limit := max
		if attempt < 8 {
			limit = base << (attempt - 1)
		}
		for range 50 {
			if d := backoff(attempt, base, max); d < 0 || d > limit {
				t.Fatalf("attempt %d: backoff %v outside [0, %v]", attempt, d, limit)
			}
		}
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep on a cancelled context: %v", err)
	}
}
