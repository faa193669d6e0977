package bitbucket

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const minDelay, maxDelay = 100 * time.Millisecond, time.Second
	tests := []struct {
		name   string
		retry  int
		jitter float64
		want   time.Duration
	}{
		{"first retry, no jitter: half of min", 1, 0, 50 * time.Millisecond},
		{"first retry, full jitter: min", 1, 0.999999999, 100 * time.Millisecond},
		{"second retry doubles", 2, 0, 100 * time.Millisecond},
		{"third retry", 3, 0.5, 300 * time.Millisecond},
		{"capped at max", 10, 0, 500 * time.Millisecond},
		{"huge retry stays capped", 5000, 0.999999999, time.Second},
		{"retry 0 treated as 1", 0, 0, 50 * time.Millisecond},
		{"bad jitter ignored", 1, 7, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := backoff(tt.retry, minDelay, maxDelay, tt.jitter)
			if diff := got - tt.want; diff < -time.Microsecond || diff > time.Microsecond {
				t.Errorf("backoff(%d, %v) = %s, want %s", tt.retry, tt.jitter, got, tt.want)
			}
		})
	}
}

func TestBackoffNeverExceedsMax(t *testing.T) {
	for retry := 1; retry < 100; retry++ {
		for _, j := range []float64{0, 0.3, 0.99999} {
			if d := backoff(retry, time.Millisecond, 50*time.Millisecond, j); d > 50*time.Millisecond || d < 0 {
				t.Fatalf("backoff(%d, %v) = %s out of [0, max]", retry, j, d)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"12", 12 * time.Second, true},
		{" 3 ", 3 * time.Second, true},
		{"-4", 0, false},
		{"99999999", 24 * time.Hour, true},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"soon", 0, false},
		{"1.5", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.value, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tt.value, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSleepCtxStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sleepCtx(ctx, time.Hour); err == nil {
		t.Fatal("sleepCtx ignored a cancelled context")
	}
	if err := sleepCtx(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("sleepCtx: %v", err)
	}
}
