package bitbucket

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBudgetStateEncoding(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 1, 0, 0, time.UTC)
	tests := []struct {
		name  string
		state BudgetState
		text  string
	}{
		{"counts", BudgetState{Start: start, Counts: []int{3, 0, 12}}, "v1;start=2026-11-27T12:01:00Z;counts=3,0,12"},
		{"empty", BudgetState{Start: start}, "v1;start=2026-11-27T12:01:00Z;counts="},
		{"blocked", BudgetState{Start: start, Counts: []int{1}, BlockedUntil: start.Add(90 * time.Second)},
			"v1;start=2026-11-27T12:01:00Z;counts=1;blocked=2026-11-27T12:02:30Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.state.String(); got != tt.text {
				t.Errorf("String = %q, want %q", got, tt.text)
			}
			back, err := ParseBudgetState(tt.text)
			if err != nil {
				t.Fatalf("ParseBudgetState: %v", err)
			}
			if !reflect.DeepEqual(back, tt.state) {
				t.Errorf("round trip = %+v, want %+v", back, tt.state)
			}
		})
	}
}

func TestParseBudgetStateRejects(t *testing.T) {
	tests := []struct{ name, text string }{
		{"empty", ""},
		{"unknown version", "v2;start=2026-11-27T12:01:00Z;counts=1"},
		{"no start", "v1;counts=1"},
		{"no counts", "v1;start=2026-11-27T12:01:00Z"},
		{"bad start", "v1;start=noon;counts=1"},
		{"not a number", "v1;start=2026-11-27T12:01:00Z;counts=1,x"},
		{"bad blocked", "v1;start=2026-11-27T12:01:00Z;counts=1;blocked=soon"},
		{"field without value", "v1;start=2026-11-27T12:01:00Z;counts=1;junk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := ParseBudgetState(tt.text); err == nil {
				t.Errorf("ParseBudgetState(%q) = %+v, want an error", tt.text, s)
			}
		})
	}
	if _, err := ParseBudgetState("v1;start=2026-11-27T12:01:00Z;counts=1;later=field"); err != nil {
		t.Errorf("an unknown field from a newer writer: %v", err)
	}
}

func TestBucketStamps(t *testing.T) {
	base := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	tests := []struct {
		name   string
		sent   []time.Time
		start  time.Time
		counts []int
	}{
		{"none", nil, time.Time{}, nil},
		{"one minute", []time.Time{at(10 * time.Second), at(59 * time.Second)}, base, []int{2}},
		{"gap", []time.Time{at(30 * time.Second), at(3*time.Minute + time.Second), at(3*time.Minute + 2*time.Second)}, base, []int{1, 0, 0, 2}},
		{"starts mid-minute", []time.Time{at(90 * time.Second), at(150 * time.Second)}, at(time.Minute), []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, counts := bucketStamps(tt.sent)
			if !start.Equal(tt.start) || !reflect.DeepEqual(counts, tt.counts) {
				t.Errorf("bucketStamps = %s %v, want %s %v", start, counts, tt.start, tt.counts)
			}
		})
	}
}

func TestBudgetStateExpired(t *testing.T) {
	now := time.Date(2026, 11, 27, 13, 0, 30, 0, time.UTC)
	tests := []struct {
		name  string
		state BudgetState
		want  bool
	}{
		{"empty", BudgetState{Start: now.Truncate(time.Minute)}, true},
		{"last minute left the window", BudgetState{Start: now.Add(-2 * time.Hour).Truncate(time.Minute), Counts: []int{5, 5}}, true},
		{"a minute still in the window", BudgetState{Start: now.Add(-time.Hour).Truncate(time.Minute), Counts: []int{0, 1}}, false},
		{"blocked", BudgetState{Start: now.Truncate(time.Minute), BlockedUntil: now.Add(time.Second)}, false},
		{"block over", BudgetState{Start: now.Truncate(time.Minute), BlockedUntil: now}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.state.Expired(now); got != tt.want {
				t.Errorf("Expired = %v, want %v", got, tt.want)
			}
		})
	}
}

// A saved budget restored into a fresh one (a new leader) counts the same
// requests, none leaves the window early, and restoring twice changes nothing.
func TestBudgetStateRoundTrip(t *testing.T) {
	clock := newFakeClock()
	first := NewBudget(100, clock.Now)
	for i := 0; i < 30; i++ {
		if _, ok := first.take(PriorityHigh, true); !ok {
			t.Fatal("refused inside the limit")
		}
		clock.Advance(70 * time.Second)
	}
	first.blockFor(45 * time.Second)
	saved, err := ParseBudgetState(first.State().String())
	if err != nil {
		t.Fatal(err)
	}
	if saved.Total() != 30 {
		t.Fatalf("saved %d requests, want 30", saved.Total())
	}

	second := NewBudget(100, clock.Now)
	v := second.Version()
	second.Restore(saved)
	if second.Version() == v {
		t.Error("Restore did not change the version")
	}
	if got := second.Used(); got != 30 {
		t.Errorf("restored Used = %d, want 30", got)
	}
	if wait, ok := second.take(PriorityHigh, true); ok || wait <= 0 || wait > 45*time.Second {
		t.Errorf("restored block: ok=%v wait=%s, want refused for at most 45s", ok, wait)
	}
	second.Restore(saved)
	if got := second.Used(); got != 30 {
		t.Errorf("restored twice: Used = %d, want still 30", got)
	}
	// Each request leaves the window no earlier than it did in the first
	// budget, and at most a minute later.
	for step := 0; step < 40; step++ {
		clock.Advance(30 * time.Second)
		a, b := first.Used(), second.Used()
		if b < a || b > a+1 {
			t.Fatalf("after %d steps Used = %d restored vs %d original", step, b, a)
		}
	}
}

func TestBudgetRestoreMergesByMinute(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	minute := now.Truncate(time.Minute)
	b := NewBudget(10, clock.Now)
	b.take(PriorityHigh, true) // one of ours in the current minute
	b.Restore(BudgetState{
		Start: minute.Add(-90 * time.Minute), // the first 30 minutes are outside the window
		Counts: append(append(make([]int, 30), make([]int, 60)...),
			3), // the current minute: 3 saved, 1 known already
	})
	if got := b.Used(); got != 3 {
		t.Errorf("Used = %d, want 3: the larger count of the minute", got)
	}
	b.Restore(BudgetState{Start: minute.Add(-10 * time.Minute), Counts: []int{50}})
	if got := b.Used(); got != 10 {
		t.Errorf("Used = %d, want the limit 10: a fuller window says no more", got)
	}
	unlimited := NewBudget(-1, clock.Now)
	unlimited.Restore(BudgetState{Start: minute, Counts: []int{5}})
	if got := unlimited.Used(); got != 0 {
		t.Errorf("an unlimited budget restored %d requests", got)
	}
}

func TestBudgetExhausted(t *testing.T) {
	tests := []struct {
		name      string
		announced bool
		// wait is the Retry-After, or the backoff when not announced.
		wait time.Duration
		// at each offset, whether a high and a low priority request fit.
		checks []struct {
			after     time.Duration
			high, low bool
		}
	}{
		{
			name: "Retry-After: everything frees at once", announced: true, wait: time.Minute,
			checks: []struct {
				after     time.Duration
				high, low bool
			}{{0, false, false}, {59 * time.Second, false, false}, {time.Minute, true, true}},
		},
		{
			name: "no Retry-After: single slots for high priority first", wait: time.Second,
			checks: []struct {
				after     time.Duration
				high, low bool
			}{{0, false, false}, {time.Second, true, false}, {5 * time.Minute, true, false}, {10 * time.Minute, true, true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			b := NewBudget(100, clock.Now) // reserve 10
			for i := 0; i < 20; i++ {
				b.take(PriorityLow, true)
			}
			start := clock.Now()
			b.exhausted(tt.wait, tt.announced)
			if b.Remaining() != 0 {
				t.Fatalf("Remaining = %d after a 429, want 0", b.Remaining())
			}
			for _, c := range tt.checks {
				clock.Advance(start.Add(c.after).Sub(clock.Now()))
				low, high := fits(b, PriorityLow), fits(b, PriorityHigh)
				if high != c.high || low != c.low {
					t.Errorf("after %s: high %v low %v, want high %v low %v", c.after, high, low, c.high, c.low)
				}
			}
		})
	}
}

// fits reports whether a request of priority p would be allowed, without
// spending it.
func fits(b *Budget, p Priority) bool {
	stamp, _, ok := b.takeStamped(p, true)
	if ok {
		b.refund(stamp)
	}
	return ok
}

// A Retry-After longer than the window still gives a state that saves.
func TestBudgetExhaustedBeyondTheWindow(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(10, clock.Now)
	b.exhausted(3*time.Hour, true)
	if _, err := ParseBudgetState(b.State().String()); err != nil {
		t.Fatalf("state after a 3h Retry-After: %v", err)
	}
	clock.Advance(2 * time.Hour)
	if fits(b, PriorityHigh) {
		t.Error("sent during the Retry-After")
	}
	clock.Advance(time.Hour)
	if !fits(b, PriorityLow) {
		t.Error("still refused after the Retry-After")
	}
}

func TestObserveHeaders(t *testing.T) {
	tests := []struct {
		name      string
		header    http.Header
		wantLimit int
		wantUsed  int
	}{
		{"none", http.Header{}, 100, 5},
		{"lower limit wins", http.Header{"X-Ratelimit-Limit": {"60"}}, 60, 5},
		{"higher limit ignored", http.Header{"X-Ratelimit-Limit": {"5000"}}, 100, 5},
		{"near limit", http.Header{"X-Ratelimit-Nearlimit": {"true"}}, 100, 81},
		{"not near", http.Header{"X-Ratelimit-Nearlimit": {"false"}}, 100, 5},
		{"garbage", http.Header{"X-Ratelimit-Limit": {"lots"}}, 100, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			b := NewBudget(100, clock.Now)
			for i := 0; i < 5; i++ {
				b.take(PriorityLow, true)
			}
			b.observeHeaders(tt.header)
			if b.Limit() != tt.wantLimit || b.Used() != tt.wantUsed {
				t.Errorf("Limit/Used = %d/%d, want %d/%d", b.Limit(), b.Used(), tt.wantLimit, tt.wantUsed)
			}
		})
	}
}

func TestBudgetRegistryRestoreAndHold(t *testing.T) {
	clock := newFakeClock()
	reg := NewBudgetRegistry()
	reg.Hold()
	reg.Restore("k", BudgetState{Start: clock.Now().Truncate(time.Minute), Counts: []int{7}})
	b := reg.Get("k", 100, clock.Now)
	if got := b.Used(); got != 7 {
		t.Errorf("a budget created after Restore has Used = %d, want 7", got)
	}
	reg.Restore("k", BudgetState{Start: clock.Now().Truncate(time.Minute), Counts: []int{9}})
	if got := b.Used(); got != 9 {
		t.Errorf("Restore into a live budget: Used = %d, want 9", got)
	}
	if got := reg.Budgets(); len(got) != 1 || got["k"] != b {
		t.Errorf("Budgets = %v", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := reg.wait(ctx); err == nil {
		t.Fatal("wait returned while the registry was held")
	}
	done := make(chan error, 1)
	go func() { done <- reg.wait(context.Background()) }()
	reg.Release()
	reg.Release() // twice is harmless
	if err := <-done; err != nil {
		t.Fatalf("wait after Release: %v", err)
	}
}

// FuzzParseBudgetState: a Lease anyone with access to the namespace could edit must never
// crash the leader, and whatever parses encodes back to something that parses the same.
func FuzzParseBudgetState(f *testing.F) {
	f.Add("v1;start=2026-11-27T12:01:00Z;counts=3,0,12;blocked=2026-11-27T12:30:05Z")
	f.Add("v1;start=2026-11-27T12:01:00Z;counts=")
	f.Add("v1;counts=1;start=2026-11-27T12:01:00+02:00")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseBudgetState(text)
		if err != nil {
			return
		}
		again, err := ParseBudgetState(s.String())
		if err != nil {
			t.Fatalf("re-encoding %q gave %q: %v", text, s.String(), err)
		}
		if again.String() != s.String() {
			t.Fatalf("round trip changed %q to %q", s.String(), again.String())
		}
		b := NewBudget(100, nil)
		b.Restore(s)
		if b.Used() > 100 {
			t.Fatalf("restored %d requests into a budget of 100", b.Used())
		}
	})
}

func TestParseBudgetStateClampsNumbers(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 1, 0, 0, time.UTC)
	tests := []struct {
		name, text string
		start      time.Time
		counts     []int
	}{
		{"negative count", "v1;start=2026-11-27T12:01:00Z;counts=1,-2", start, []int{1, 0}},
		{"huge count", "v1;start=2026-11-27T12:01:00Z;counts=99999999", start, []int{maxStateCount}},
		{"count beyond int", "v1;start=2026-11-27T12:01:00Z;counts=999999999999999999999999", start, []int{maxStateCount}},
		{"too many minutes keep the newest", "v1;start=2026-11-27T12:01:00Z;counts=9," + strings.Repeat("1,", maxStateMinutes-1) + "2",
			start.Add(time.Minute), append(slices.Repeat([]int{1}, maxStateMinutes-1), 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseBudgetState(tt.text)
			if err != nil {
				t.Fatalf("ParseBudgetState: %v", err)
			}
			if !s.Start.Equal(tt.start) || !reflect.DeepEqual(s.Counts, tt.counts) {
				t.Errorf("got start %s counts %v (len %d), want start %s counts len %d", s.Start, s.Counts[:min(5, len(s.Counts))], len(s.Counts), tt.start, len(tt.counts))
			}
		})
	}
}

// TestBudgetStateClamp: whatever a hand-edited Lease says, a restored budget holds at most a
// full window and a block of at most an hour.
func TestBudgetStateClamp(t *testing.T) {
	now := time.Date(2026, 12, 3, 22, 30, 20, 0, time.UTC)
	minute := now.Truncate(time.Minute)
	tests := []struct {
		name  string
		in    BudgetState
		limit int
		want  BudgetState
	}{
		{"a real state is kept", BudgetState{Start: minute.Add(-10 * time.Minute), Counts: []int{3, 0, 5}},
			100, BudgetState{Start: minute.Add(-10 * time.Minute), Counts: []int{3, 0, 5}}},
		{"counts above the limit", BudgetState{Start: minute.Add(-3 * time.Minute), Counts: []int{60, 70, 80}},
			100, BudgetState{Start: minute.Add(-3 * time.Minute), Counts: []int{60, 40, 0}}},
		{"negative counts", BudgetState{Start: minute.Add(-3 * time.Minute), Counts: []int{-5, 2}},
			100, BudgetState{Start: minute.Add(-2 * time.Minute), Counts: []int{2}}},
		{"minutes in the future", BudgetState{Start: minute.Add(time.Minute), Counts: []int{1, 1, 500}},
			1000, BudgetState{Start: minute.Add(time.Minute), Counts: []int{1, 1}}},
		{"start far in the future", BudgetState{Start: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Counts: []int{1000}},
			1000, BudgetState{Start: minute}},
		{"start in year one", BudgetState{Start: time.Time{}, Counts: []int{1000}},
			1000, BudgetState{Start: minute}},
		{"block beyond an hour", BudgetState{Start: minute, BlockedUntil: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
			1000, BudgetState{Start: minute, BlockedUntil: now.Add(time.Hour).Truncate(time.Second)}},
		{"block within the hour is kept", BudgetState{Start: minute, BlockedUntil: now.Add(10 * time.Minute)},
			1000, BudgetState{Start: minute, BlockedUntil: now.Add(10 * time.Minute)}},
		{"unlimited keeps counts", BudgetState{Start: minute, Counts: []int{5000}},
			-1, BudgetState{Start: minute, Counts: []int{5000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.Clamp(now, tt.limit)
			if !got.Start.Equal(tt.want.Start) || !slices.Equal(got.Counts, tt.want.Counts) || !got.BlockedUntil.Equal(tt.want.BlockedUntil) {
				t.Errorf("Clamp = %+v, want %+v", got, tt.want)
			}
			if tt.limit > 0 && got.Total() > tt.limit {
				t.Errorf("Clamp kept %d requests, limit %d", got.Total(), tt.limit)
			}
		})
	}
}

func TestRestoreHandEditedState(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(100, clock.Now)
	future := clock.Now().Add(24 * 365 * time.Hour)
	b.Restore(BudgetState{Start: future, Counts: []int{100}, BlockedUntil: future})
	if got := b.Remaining(); got != 100 {
		t.Errorf("Remaining after a state from the future = %d, want 100", got)
	}
	clock.Advance(time.Hour + time.Second)
	if _, ok := b.take(PriorityLow, true); !ok {
		t.Error("a block from a hand-edited Lease outlived an hour")
	}
}
