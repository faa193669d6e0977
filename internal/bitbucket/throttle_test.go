package bitbucket

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestThrottleWait(t *testing.T) {
	tests := []struct {
		strikes int
		want    time.Duration
	}{
		{0, 0}, {1, 5 * time.Second}, {2, 10 * time.Second}, {3, 20 * time.Second}, {4, 40 * time.Second},
		{5, 80 * time.Second}, {6, 160 * time.Second}, {7, 5 * time.Minute}, {8, 5 * time.Minute}, {1000, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := throttleWait(tt.strikes, DefaultThrottleMin, DefaultThrottleMax); got != tt.want {
			t.Errorf("throttleWait(%d) = %s, want %s", tt.strikes, got, tt.want)
		}
	}
}

func TestRateLimitReset(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name, value string
		want        time.Duration
		ok          bool
	}{
		{"absent", "", 0, false},
		{"delay", "42", 42 * time.Second, true},
		{"epoch", "1800000090", 90 * time.Second, true},
		{"epoch in the past", "1799999000", 0, false},
		{"garbage", "soon", 0, false},
		{"negative", "-5", 0, false},
		{"far epoch", "4000000000", 24 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				h.Set("X-RateLimit-Reset", tt.value)
			}
			got, ok := rateLimitReset(h, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("rateLimitReset(%q) = %s, %v; want %s, %v", tt.value, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// throttleServer answers 429 without Retry-After while blocked, else an empty runner list.
func throttleServer(t *testing.T, blocked *atomic.Bool, hits *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if blocked.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"type":"error","error":{"message":"Rate limit for this resource has been exceeded."}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"values":[],"pagelen":100}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestThrottledCredentialSendsFewRequestsInAnHour plays issue 12's case on a fake clock: Bitbucket
// answers every request with 429 and no Retry-After for an hour, while the operator tries a
// runner create and a poll every second. Before the backoff it sent a create about every 3 s.
func TestThrottledCredentialSendsFewRequestsInAnHour(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC))
	var blocked atomic.Bool
	var hits atomic.Int64
	blocked.Store(true)
	c, err := New(Config{
		BaseURL: throttleServer(t, &blocked, &hits), Credentials: Credentials{AccessToken: "tok"},
		Budgets: NewBudgetRegistry(), Now: clock.Now, MaxAttempts: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sentAt []time.Duration
	for s := 0; s < 3600; s++ {
		before := hits.Load()
		_, _ = c.CreateRunner(ctx, wsScope, "r", defaultLabels)
		_, _ = c.ListRunners(ctx, wsScope)
		for i := before; i < hits.Load(); i++ {
			sentAt = append(sentAt, time.Duration(s)*time.Second)
		}
		clock.Step(time.Second)
	}
	if n := len(sentAt); n > 30 || n < 10 {
		t.Fatalf("requests sent in an hour of 429s = %d at %v, want between 10 and 30", n, sentAt)
	}
	// The gaps double from 5 s to the 5 minute cap.
	for i := 1; i < len(sentAt); i++ {
		gap := sentAt[i] - sentAt[i-1]
		want := throttleWait(i, DefaultThrottleMin, DefaultThrottleMax)
		if gap < want || gap > want+time.Second {
			t.Errorf("gap before request %d = %s, want %s", i+1, gap, want)
		}
	}
	th := c.Budget().Throttle()
	if th.Strikes != len(sentAt) || th.Wait <= 0 {
		t.Errorf("throttle = %+v, want %d strikes and a wait", th, len(sentAt))
	}
	t.Logf("requests in an hour of 429s: %d at %v", len(sentAt), sentAt)

	// The first answer that is not a 429 ends the streak.
	blocked.Store(false)
	clock.Step(th.Wait)
	if _, err := c.ListRunners(ctx, wsScope); err != nil && !IsBudgetExhausted(err) {
		t.Fatalf("ListRunners after the block: %v", err)
	}
	if _, err := c.CreateRunner(ctx, wsScope, "r", defaultLabels); err != nil && IsRateLimited(err) {
		t.Fatalf("CreateRunner after the block: %v", err)
	}
	if th := c.Budget().Throttle(); th.Strikes != 0 {
		t.Errorf("throttle after a success = %+v, want none", th)
	}
}

// TestThrottleProbeIsAlone: when the backoff ends, one request goes out; the others wait for
// its answer instead of all earning a 429 together.
func TestThrottleProbeIsAlone(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC))
	b := NewBudget(-1, clock.Now)
	sent, _, _ := b.takeStamped(PriorityHigh, true)
	clock.Step(time.Second) // the 429 comes back a second later
	if wait := b.strike(sent, 0); wait != 5*time.Second {
		t.Fatalf("first strike wait = %s", wait)
	}
	b.blockFor(5 * time.Second)
	clock.Step(5 * time.Second)
	probe, _, ok := b.takeStamped(PriorityHigh, true)
	if !ok {
		t.Fatal("the probe was refused after the backoff")
	}
	if _, ok := b.take(PriorityHigh, true); ok {
		t.Error("a second request went out while the probe was in flight")
	}
	// A request in flight before the 429 proves nothing.
	if n := b.answered(sent, true); n != 0 || b.Throttle().Strikes != 1 {
		t.Errorf("an answer to an older request ended the streak")
	}
	if n := b.answered(probe, true); n != 1 {
		t.Errorf("answered = %d, want the streak of 1 ended", n)
	}
	if _, ok := b.take(PriorityHigh, true); !ok {
		t.Error("requests still held after the probe succeeded")
	}
}

func TestThrottleMessage(t *testing.T) {
	tests := []struct {
		th   Throttle
		want string
	}{
		{Throttle{Strikes: 3, Wait: 19600 * time.Millisecond}, "3 requests in a row with these credentials with 429; nothing is sent with them for 20s"},
		{Throttle{Strikes: 1}, "1 requests in a row with these credentials with 429; the next request tries"},
	}
	for _, tt := range tests {
		if got := tt.th.Message(); !strings.Contains(got, tt.want) || !strings.Contains(got, "runners already online keep running") {
			t.Errorf("Message(%+v) = %q, want it to contain %q", tt.th, got, tt.want)
		}
	}
	if got := ThrottleOf(nil); got.Strikes != 0 {
		t.Errorf("ThrottleOf(nil) = %+v", got)
	}
}
