package bitbucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BudgetState is what a Budget needs to survive the process: how many
// requests were sent in each minute of the rolling hour, and until when
// Bitbucket asked for quiet. A new leader restores it before its first call,
// because Bitbucket's window still holds every request of the previous one
// (docs/adr/0009-request-budget-state.md).
type BudgetState struct {
	// Start is the minute of Counts[0], in UTC.
	Start time.Time
	// Counts are requests per minute from Start, oldest first.
	Counts []int
	// BlockedUntil is the end of the last 429's Retry-After, if later than
	// the snapshot.
	BlockedUntil time.Time
}

const (
	budgetStateVersion = "v1"
	// A state never needs more than the window and the current minute; more
	// is a damaged or foreign record.
	maxStateMinutes = 2 * 60
	// maxStateCount bounds one minute's count when decoding, so a damaged
	// record cannot make the budget allocate without limit.
	maxStateCount = 1_000_000
	// nearLimitFraction is where Bitbucket's X-RateLimit-NearLimit turns
	// true: less than a fifth of the hourly limit left.
	nearLimitFraction = 0.8
)

// Total is the number of requests the state records.
func (s BudgetState) Total() int {
	n := 0
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Expired reports whether nothing in the state matters at now any more: every
// request has left the window and no block is pending.
func (s BudgetState) Expired(now time.Time) bool {
	if s.BlockedUntil.After(now) {
		return false
	}
	for i := len(s.Counts) - 1; i >= 0; i-- {
		if s.Counts[i] > 0 {
			return !s.Start.Add(time.Duration(i+1) * time.Minute).After(now.Add(-budgetWindow))
		}
	}
	return true
}

// String encodes the state compactly, for an annotation:
// "v1;start=2026-11-27T12:01:00Z;counts=3,0,12;blocked=2026-11-27T12:30:05Z"
// (blocked only when set).
func (s BudgetState) String() string {
	var b strings.Builder
	b.WriteString(budgetStateVersion)
	b.WriteString(";start=")
	b.WriteString(s.Start.UTC().Format(time.RFC3339))
	b.WriteString(";counts=")
	for i, c := range s.Counts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c))
	}
	if !s.BlockedUntil.IsZero() {
		b.WriteString(";blocked=")
		b.WriteString(s.BlockedUntil.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// ParseBudgetState decodes String's output.
func ParseBudgetState(text string) (BudgetState, error) {
	var s BudgetState
	fields := strings.Split(strings.TrimSpace(text), ";")
	if fields[0] != budgetStateVersion {
		return s, fmt.Errorf("budget state: unknown version %q", fields[0])
	}
	var sawStart, sawCounts bool
	dropped := 0
	for _, f := range fields[1:] {
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return s, fmt.Errorf("budget state: field %q is not name=value", f)
		}
		switch name {
		case "start":
			t, err := time.Parse(time.RFC3339, value)
			if err != nil {
				return s, fmt.Errorf("budget state: start: %w", err)
			}
			s.Start, sawStart = t.UTC().Truncate(time.Minute), true
		case "counts":
			sawCounts = true
			if value == "" {
				continue
			}
			parts := strings.Split(value, ",")
			if len(parts) > maxStateMinutes {
				// A hand-edited or foreign record: only the newest minutes can
				// still be in the window. Start moves with them.
				dropped = len(parts) - maxStateMinutes
				parts = parts[dropped:]
			}
			s.Counts = make([]int, len(parts))
			for i, p := range parts {
				n, err := strconv.Atoi(strings.TrimSpace(p))
				if err != nil && !errors.Is(err, strconv.ErrRange) {
					return s, fmt.Errorf("budget state: count %q is not a number of requests", p)
				}
				// Clamped, not refused: the other minutes of a record with one
				// absurd count still say what was sent.
				s.Counts[i] = min(max(n, 0), maxStateCount)
			}
		case "blocked":
			t, err := time.Parse(time.RFC3339, value)
			if err != nil {
				return s, fmt.Errorf("budget state: blocked: %w", err)
			}
			s.BlockedUntil = t.UTC()
		default:
			// A newer writer may add fields; what this one knows still holds.
		}
	}
	if !sawStart || !sawCounts {
		return BudgetState{}, errors.New("budget state: start and counts are required")
	}
	s.Start = s.Start.Add(time.Duration(dropped) * time.Minute)
	return s, nil
}

// maxClockSkew is how far in the future a saved minute may start and still count: the
// replicas' clocks differ a little, a record from further ahead was edited by hand.
const maxClockSkew = 2 * time.Minute

// Clamp bounds a loaded state to what a real one can hold at now
// (docs/adr/0018-throttle-backoff-and-clamps.md): minutes outside the window, or further in
// the future than clock skew explains, are dropped; no minute and no window holds more than
// limit requests (limit <= 0: no count bound); a block ends at most a window from now (a
// Retry-After of more than an hour does not fit an hourly quota). A hand-edited Lease can
// then cost at most one window of a full budget and a block of an hour, never more.
func (s BudgetState) Clamp(now time.Time, limit int) BudgetState {
	out := BudgetState{BlockedUntil: s.BlockedUntil}
	if maxBlock := now.Add(budgetWindow); out.BlockedUntil.After(maxBlock) {
		out.BlockedUntil = maxBlock.UTC().Truncate(time.Second)
	}
	first := now.Add(-budgetWindow).UTC().Truncate(time.Minute)
	last := now.Add(maxClockSkew)
	total := 0
	for i, c := range s.Counts {
		minute := s.Start.Add(time.Duration(i) * time.Minute)
		if minute.Before(first) || minute.After(last) || c <= 0 {
			continue
		}
		if out.Start.IsZero() {
			out.Start = minute
		}
		if limit > 0 {
			c = min(c, limit-total)
		}
		j := int(minute.Sub(out.Start) / time.Minute)
		for len(out.Counts) <= j {
			out.Counts = append(out.Counts, 0)
		}
		out.Counts[j] = max(c, 0)
		total += out.Counts[j]
	}
	if out.Start.IsZero() {
		out.Start = now.UTC().Truncate(time.Minute)
	}
	return out
}

// bucketStamps counts ascending send times per minute.
func bucketStamps(sent []time.Time) (start time.Time, counts []int) {
	if len(sent) == 0 {
		return time.Time{}, nil
	}
	start = sent[0].UTC().Truncate(time.Minute)
	for _, t := range sent {
		i := int(t.Sub(start) / time.Minute)
		for len(counts) <= i {
			counts = append(counts, 0)
		}
		counts[i]++
	}
	return start, counts
}

// State snapshots the budget for saving.
func (b *Budget) State() BudgetState {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.prune(now)
	var s BudgetState
	s.Start, s.Counts = bucketStamps(b.sent)
	if s.Start.IsZero() {
		s.Start = now.UTC().Truncate(time.Minute)
	}
	if b.blocked.After(now) {
		// Rounded up to the second, the encoding's resolution: early is the
		// one direction that earns another 429.
		s.BlockedUntil = b.blocked.Truncate(time.Second)
		if s.BlockedUntil.Before(b.blocked) {
			s.BlockedUntil = s.BlockedUntil.Add(time.Second)
		}
	}
	return s
}

// Version changes whenever the budget does; equal versions mean State has
// nothing new to save.
func (b *Budget) Version() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.version
}

// Restore merges a saved state into the budget, minute by minute taking the
// larger count. A saved request is placed at the end of its minute (or now,
// if that is later than now), so it leaves the window at most a minute late
// and never early. Taking the larger count rather than the sum makes restoring
// the same state twice, or a state this budget wrote itself, harmless.
func (b *Budget) Restore(s BudgetState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.prune(now)
	s = s.Clamp(now, b.effectiveLimit())
	b.blockUntil(s.BlockedUntil)
	limit := b.effectiveLimit()
	if limit <= 0 {
		return
	}
	start, local := bucketStamps(b.sent)
	cutoff := now.Add(-budgetWindow)
	added := 0
	for i, saved := range s.Counts {
		minute := s.Start.Add(time.Duration(i) * time.Minute)
		at := minute.Add(time.Minute - time.Millisecond)
		if at.After(now) {
			at = now
		}
		if !at.After(cutoff) {
			continue
		}
		have := 0
		if !start.IsZero() {
			if j := int(minute.Sub(start) / time.Minute); minute.Sub(start) >= 0 && j < len(local) {
				have = local[j]
			}
		}
		// A window fuller than the limit says no more than a full one.
		for n := saved - have; n > 0 && len(b.sent) < limit; n-- {
			b.sent = append(b.sent, at)
			added++
		}
	}
	if added > 0 {
		slices.SortFunc(b.sent, func(x, y time.Time) int { return x.Compare(y) })
		b.version++
	}
}

// exhausted records a 429, which says Bitbucket counts at least the limit in
// its window whatever our count says (a restart lost requests, another tool
// shares the credential). Nothing is sent before freeAt = now + wait. The
// requests we did not know about are added to the window: when Bitbucket
// announced the wait (Retry-After) they all leave at freeAt, which is what
// it promised; when it did not, they leave one by one between freeAt and an
// hour from now, the way a steady consumer's requests age out of a rolling
// window. Spread, they free single slots, which the reserve keeps for
// creates, disables and deletes until polling may resume.
func (b *Budget) exhausted(wait time.Duration, announced bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	freeAt := now.Add(wait)
	b.blockUntil(freeAt)
	limit := b.effectiveLimit()
	if limit <= 0 {
		return
	}
	b.prune(now)
	if end := now.Add(budgetWindow); freeAt.After(end) {
		// A wait beyond the window is the block's business; guessed requests
		// sent in the future would not fit a saved state.
		freeAt = end
	}
	span := now.Add(budgetWindow).Sub(freeAt)
	if announced {
		span = 0
	}
	b.fill(limit, freeAt, span)
}

// observeHeaders corrects the budget from Bitbucket's rate limit headers,
// which it sends for access tokens on scaled endpoints: X-RateLimit-Limit is
// the hourly limit (lower than ours: it wins), X-RateLimit-NearLimit "true"
// means less than a fifth of it is left. Corrections only ever add: a
// count above Bitbucket's costs some polling, one below costs 429s.
func (b *Budget) observeHeaders(h http.Header) {
	limitHeader, near := h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-NearLimit")
	if limitHeader == "" && near == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, err := strconv.Atoi(strings.TrimSpace(limitHeader)); err == nil && n > 0 {
		b.serverLimit = n
	}
	limit := b.effectiveLimit()
	if limit <= 0 || !strings.EqualFold(strings.TrimSpace(near), "true") {
		return
	}
	now := b.now()
	b.prune(now)
	// Nothing says when the unknown requests were sent: spread them over
	// the hour, as exhausted does; the first one a step from now, since one
	// leaving at once would not count.
	target := int(float64(limit)*nearLimitFraction) + 1
	step := budgetWindow / time.Duration(target)
	b.fill(target, now.Add(step), budgetWindow-step)
}

// fill adds requests until the window holds target, leaving it evenly from
// freeAt over span. Callers hold b.mu and have pruned.
func (b *Budget) fill(target int, freeAt time.Time, span time.Duration) {
	n := target - len(b.sent)
	if n <= 0 {
		return
	}
	for i := 0; i < n; i++ {
		leaves := freeAt.Add(time.Duration(int64(span) * int64(i) / int64(n)))
		b.sent = append(b.sent, leaves.Add(-budgetWindow))
	}
	slices.SortFunc(b.sent, func(x, y time.Time) int { return x.Compare(y) })
	b.version++
}

// Hold makes clients of the registry send nothing until Release: the
// manager holds it from start until the saved budgets are restored, so the
// first request of a new leader already counts the last one's.
func (r *BudgetRegistry) Hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready == nil {
		r.ready = make(chan struct{})
	}
}

// Release lets clients send again after Hold.
func (r *BudgetRegistry) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready != nil {
		close(r.ready)
		r.ready = nil
	}
}

// wait blocks while the registry is held.
func (r *BudgetRegistry) wait(ctx context.Context) error {
	r.mu.Lock()
	ready := r.ready
	r.mu.Unlock()
	if ready == nil {
		return nil
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the saved request budget: %w", ctx.Err())
	}
}

// Restore merges a saved state into the budget of key, now or when a client
// first asks for it.
func (r *BudgetRegistry) Restore(key string, s BudgetState) {
	r.mu.Lock()
	b, ok := r.budgets[key]
	if !ok {
		r.pending[key] = s
	}
	r.mu.Unlock()
	if ok {
		b.Restore(s)
	}
}

// Budgets returns the budgets in use by key, for saving.
func (r *BudgetRegistry) Budgets() map[string]*Budget {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*Budget, len(r.budgets))
	for k, b := range r.budgets {
		out[k] = b
	}
	return out
}
