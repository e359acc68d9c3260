package client

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		base    time.Duration
		attempt int
		want    time.Duration // the upper bound; the lower is half of it
	}{
		{200 * time.Millisecond, 0, 200 * time.Millisecond},
		{200 * time.Millisecond, 1, 400 * time.Millisecond},
		{200 * time.Millisecond, 3, 1600 * time.Millisecond},
		{200 * time.Millisecond, 10, maxRetryBackoff},
		{time.Second, 62, maxRetryBackoff}, // a shift that would overflow
		{time.Hour, 0, maxRetryBackoff},
		{time.Hour, 29, maxRetryBackoff}, // base<<29 would overflow
		{time.Nanosecond, 0, time.Nanosecond},
	}
	for _, tt := range tests {
		for range 50 {
			got := backoff(tt.base, tt.attempt)
			if got < tt.want/2 || got > tt.want {
				t.Fatalf("backoff(%s, %d) = %s, want within [%s, %s]", tt.base, tt.attempt, got, tt.want/2, tt.want)
			}
		}
	}
}
