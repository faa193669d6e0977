package bitbucket

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// newFakeClock is a clock that moves only when told to.
func newFakeClock() *clocktesting.FakeClock {
	return clocktesting.NewFakeClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
}

func TestBudgetReserveKeepsRoomForHighPriority(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(20, clock.Now) // reserve 2
	if b.Reserve() != 2 {
		t.Fatalf("Reserve = %d, want 2", b.Reserve())
	}
	for i := 0; i < 18; i++ {
		if _, ok := b.take(PriorityLow, true); !ok {
			t.Fatalf("low priority request %d refused", i)
		}
		clock.Step(time.Minute)
	}
	wait, ok := b.take(PriorityLow, true)
	if ok {
		t.Fatal("low priority request allowed into the reserve")
	}
	// The oldest request was sent 18 minutes ago; it leaves the window in 42.
	if wait != 42*time.Minute {
		t.Errorf("low priority wait = %s, want 42m", wait)
	}
	for i := 0; i < 2; i++ {
		if _, ok := b.take(PriorityHigh, true); !ok {
			t.Fatalf("high priority request %d refused while the reserve had room", i)
		}
	}
	wait, ok = b.take(PriorityHigh, true)
	if ok || wait != 42*time.Minute {
		t.Errorf("exhausted budget: ok=%v wait=%s, want refused with 42m", ok, wait)
	}
	if b.Remaining() != 0 || b.Used() != 20 {
		t.Errorf("Remaining/Used = %d/%d, want 0/20", b.Remaining(), b.Used())
	}

	clock.Step(42 * time.Minute)
	if b.Used() != 19 {
		t.Errorf("after the oldest left the window Used = %d, want 19", b.Used())
	}
	if _, ok := b.take(PriorityHigh, true); !ok {
		t.Error("high priority refused after a slot freed")
	}
}

func TestBudgetWindowRolls(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(3, clock.Now)
	for i := 0; i < 3; i++ {
		if _, ok := b.take(PriorityHigh, true); !ok {
			t.Fatal("refused inside the limit")
		}
	}
	if _, ok := b.take(PriorityHigh, true); ok {
		t.Fatal("allowed past the limit")
	}
	clock.Step(time.Hour)
	if got := b.Remaining(); got != 3 {
		t.Errorf("Remaining after an hour = %d, want 3", got)
	}
}

func TestBudgetBlockAfter429(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(100, clock.Now)
	b.blockFor(30 * time.Second)
	if wait, ok := b.take(PriorityHigh, true); ok || wait != 30*time.Second {
		t.Errorf("blocked budget: ok=%v wait=%s", ok, wait)
	}
	if _, ok := b.take(PriorityHigh, false); !ok {
		t.Error("the request that waited out the 429 was refused")
	}
	clock.Step(30 * time.Second)
	if _, ok := b.take(PriorityLow, true); !ok {
		t.Error("still blocked after the block expired")
	}
}

func TestBudgetUnlimited(t *testing.T) {
	b := NewBudget(-1, nil)
	for i := 0; i < 5000; i++ {
		if _, ok := b.take(PriorityLow, true); !ok {
			t.Fatal("unlimited budget refused")
		}
	}
	if b.Remaining() != -1 {
		t.Errorf("Remaining = %d, want -1", b.Remaining())
	}
}

func TestBudgetRegistrySharesPerKey(t *testing.T) {
	reg := NewBudgetRegistry()
	a := reg.Get("k1", 10, nil)
	if reg.Get("k1", 10, nil) != a {
		t.Error("same key gave two budgets")
	}
	if reg.Get("k2", 10, nil) == a {
		t.Error("different keys share a budget")
	}
	reg.Get("k1", 50, nil)
	if a.Limit() != 50 {
		t.Errorf("limit = %d, want the latest configuration 50", a.Limit())
	}
}

func TestPriorityFor(t *testing.T) {
	bg := context.Background()
	tests := []struct {
		name   string
		ctx    context.Context
		method string
		want   Priority
	}{
		{"GET defaults low", bg, "GET", PriorityLow},
		{"POST defaults high", bg, "POST", PriorityHigh},
		{"DELETE defaults high", bg, "DELETE", PriorityHigh},
		{"GET marked high", WithPriority(bg, PriorityHigh), "GET", PriorityHigh},
		{"PUT marked low", WithPriority(bg, PriorityLow), "PUT", PriorityLow},
		{"explicit default falls back", WithPriority(bg, PriorityDefault), "PUT", PriorityHigh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := priorityFor(tt.ctx, tt.method); got != tt.want {
				t.Errorf("priorityFor = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestBudgetRefund(t *testing.T) {
	clock := newFakeClock()
	b := NewBudget(5, clock.Now)
	first, _, _ := b.takeStamped(PriorityHigh, true)
	clock.Step(time.Second)
	second, _, _ := b.takeStamped(PriorityHigh, true)
	b.refund(first)
	if b.Used() != 1 {
		t.Fatalf("Used = %d after a refund, want 1", b.Used())
	}
	b.refund(first) // twice is harmless
	b.refund(second)
	if b.Used() != 0 {
		t.Errorf("Used = %d, want 0", b.Used())
	}
}
