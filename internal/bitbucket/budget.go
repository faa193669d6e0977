package bitbucket

import (
	"context"
	"sync"
	"time"
)

// Bitbucket counts authenticated requests per OAuth consumer, access token or
// user over a rolling hour and answers 429 past about 1,000
// (support.atlassian.com/bitbucket-cloud/docs/api-request-limits/).
const (
	DefaultHourlyLimit = 1000
	budgetWindow       = time.Hour
	// reserveFraction of the budget is kept for high priority requests, so
	// polls running dry can never starve a create, a disable or a delete.
	reserveFraction = 0.10
)

// Priority says how much a request may draw on a nearly spent budget.
type Priority int

const (
	// PriorityDefault lets the method decide: GET is low, anything else high.
	PriorityDefault Priority = iota
	// PriorityLow is for polls and queue reads; refused once only the reserve
	// is left.
	PriorityLow
	// PriorityHigh is for creates, state changes and deletes, and for reads a
	// correctness decision depends on (the adopt-by-name lookup before a
	// create); may use the reserve.
	PriorityHigh
)

func (p Priority) String() string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityHigh:
		return "high"
	}
	return "default"
}

type priorityKey struct{}

// WithPriority marks every request made with ctx.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

func priorityFor(ctx context.Context, method string) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok && p != PriorityDefault {
		return p
	}
	if method == "GET" || method == "HEAD" {
		return PriorityLow
	}
	return PriorityHigh
}

// Budget is a rolling one-hour request counter for one credential, shared by
// every client built for that credential. It keeps the time of each request
// in the window (at most `limit` of them, about 24 KB for 1,000), which makes
// "when does the next slot free" exact rather than estimated.
type Budget struct {
	now func() time.Time

	mu    sync.Mutex
	limit int
	// serverLimit is the limit Bitbucket announced in X-RateLimit-Limit (0:
	// none seen); the lower of the two applies.
	serverLimit int
	sent        []time.Time // ascending
	blocked     time.Time   // server said 429: send nothing before this
	// The 429 streak (throttle.go): strikes in a row, when the last one
	// came, the provisional block of the probe in flight, and the backoff.
	strikes                  int
	lastStrike               time.Time
	probeBlock               time.Time
	throttleMin, throttleMax time.Duration
	// version counts changes, so a persister writes only budgets that moved.
	version uint64
}

// NewBudget returns a budget of limit requests per rolling hour. limit <= 0
// means unlimited (the budget only counts).
func NewBudget(limit int, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	return &Budget{limit: limit, now: now, throttleMin: DefaultThrottleMin, throttleMax: DefaultThrottleMax}
}

// Limit is the number of requests allowed per rolling hour (<= 0: unlimited):
// the configured limit, or the one Bitbucket announced when that is lower.
func (b *Budget) Limit() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.effectiveLimit()
}

func (b *Budget) effectiveLimit() int {
	if b.limit > 0 && b.serverLimit > 0 && b.serverLimit < b.limit {
		return b.serverLimit
	}
	return b.limit
}

// Used is how many requests were sent in the last hour.
func (b *Budget) Used() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prune(b.now())
	return len(b.sent)
}

// Remaining is how many more requests fit in the window; the operator
// stretches its polling interval when it gets low. -1 means unlimited.
func (b *Budget) Remaining() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.effectiveLimit()
	if limit <= 0 {
		return -1
	}
	b.prune(b.now())
	if r := limit - len(b.sent); r > 0 {
		return r
	}
	return 0
}

// Reserve is how many requests are held back for high priority.
func (b *Budget) Reserve() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reserve()
}

func (b *Budget) reserve() int {
	limit := b.effectiveLimit()
	if limit < 2 {
		return 0
	}
	r := int(float64(limit) * reserveFraction)
	if r < 1 {
		r = 1
	}
	return r
}

// take records one request if the budget allows it at priority p; otherwise
// it returns how long until a slot frees for that priority. honourBlock is
// false for the retry of a request that has itself just waited out the 429
// that set the block.
func (b *Budget) take(p Priority, honourBlock bool) (time.Duration, bool) {
	_, wait, ok := b.takeStamped(p, honourBlock)
	return wait, ok
}

// takeStamped is take that also returns the recorded send time, for refund.
func (b *Budget) takeStamped(p Priority, honourBlock bool) (time.Time, time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if honourBlock && now.Before(b.blocked) {
		return time.Time{}, b.blocked.Sub(now), false
	}
	b.prune(now)
	limit := b.effectiveLimit()
	if limit > 0 {
		allowed := limit
		if p != PriorityHigh {
			allowed -= b.reserve()
		}
		if len(b.sent) >= allowed {
			// The request fits once len(sent) drops below allowed, i.e.
			// when the (len-allowed)th oldest request leaves the window.
			idx := len(b.sent) - allowed
			wait := b.sent[idx].Add(budgetWindow).Sub(now)
			if wait <= 0 {
				wait = time.Millisecond
			}
			return time.Time{}, wait, false
		}
	}
	if limit > 0 {
		b.sent = append(b.sent, now)
		b.version++
	}
	b.probe(now)
	return now, 0, true
}

// refund gives back a slot taken at stamp by a request that never reached
// Bitbucket (the token fetch failed, the dial was refused): Bitbucket did
// not count it, so neither do we.
func (b *Budget) refund(stamp time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.sent) - 1; i >= 0; i-- {
		if b.sent[i].Equal(stamp) {
			b.sent = append(b.sent[:i], b.sent[i+1:]...)
			b.version++
			return
		}
	}
}

// blockFor stops all requests for d after the server answered 429: our count
// can be behind Bitbucket's (an operator restart forgets the window; other
// tools may share the credential), and sending more only extends the penalty.
func (b *Budget) blockFor(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blockUntil(b.now().Add(d))
}

func (b *Budget) blockUntil(until time.Time) {
	if until.After(b.blocked) {
		b.blocked = until
		b.version++
	}
}

func (b *Budget) setLimit(limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = limit
}

// configuredLimit is the limit the clients asked for, before Bitbucket's.
func (b *Budget) configuredLimit() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit
}

func (b *Budget) prune(now time.Time) {
	cutoff := now.Add(-budgetWindow)
	i := 0
	for i < len(b.sent) && !b.sent[i].After(cutoff) {
		i++
	}
	if i > 0 {
		b.sent = append(b.sent[:0], b.sent[i:]...)
	}
}

// BudgetRegistry hands out one Budget per credential hash.
type BudgetRegistry struct {
	mu      sync.Mutex
	budgets map[string]*Budget
	// pending holds restored states of credentials no client asked for yet;
	// Get applies them when the first one does.
	pending map[string]BudgetState
	// ready, when not nil, is closed once the saved states are restored;
	// clients send nothing before (see Hold).
	ready chan struct{}
}

// NewBudgetRegistry returns an empty registry; tests use their own so they do
// not share counters.
func NewBudgetRegistry() *BudgetRegistry {
	return &BudgetRegistry{budgets: map[string]*Budget{}, pending: map[string]BudgetState{}}
}

// DefaultBudgets is the process-wide registry that New uses unless
// Config.Budgets is set: every client for the same credential in the manager
// draws from one budget.
var DefaultBudgets = NewBudgetRegistry()

// Get returns the budget for key, creating it with limit. A later client that
// asks for a different limit changes it for everyone: the most recent
// configuration of a credential wins.
func (r *BudgetRegistry) Get(key string, limit int, now func() time.Time) *Budget {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.budgets[key]; ok {
		if b.configuredLimit() != limit {
			b.setLimit(limit)
		}
		return b
	}
	b := NewBudget(limit, now)
	if st, ok := r.pending[key]; ok {
		b.Restore(st)
		delete(r.pending, key)
	}
	r.budgets[key] = b
	return b
}
