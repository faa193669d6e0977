package bitbucket

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff of a throttled credential (docs/adr/0018-throttle-backoff-and-clamps.md). A 429
// without Retry-After says only "too many": the budget's guess of Bitbucket's window
// (exhausted) frees single slots for high priority requests every few seconds, and before
// this backoff a runner create went out at each one (71 in four minutes, all 429). Now each
// 429 in a row doubles the quiet time of the whole credential, from ThrottleMin to
// ThrottleMax, and the first answer that is not a 429 ends it. With the defaults an hour of
// 429s costs 5+10+20+40+80+160 s for the first six probes and one per 5 minutes after: 17
// requests.
const (
	DefaultThrottleMin = 5 * time.Second
	DefaultThrottleMax = 5 * time.Minute
)

// throttleWait is the quiet time after the strikes-th 429 in a row: min doubled per strike,
// at most max.
func throttleWait(strikes int, minWait, maxWait time.Duration) time.Duration {
	if strikes < 1 {
		return 0
	}
	if maxWait < minWait {
		maxWait = minWait
	}
	d := minWait
	for i := 1; i < strikes && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// Throttle describes a credential Bitbucket is answering with 429.
type Throttle struct {
	// Strikes is the number of 429 answers in a row; 0 means not throttled.
	Strikes int
	// Until is when the next request may go out.
	Until time.Time
	// Wait is Until minus now, never negative.
	Wait time.Duration
}

// Throttle reports the 429 streak of the credential. Controllers use it to show it on the
// pool; the metrics read it at scrape time.
func (b *Budget) Throttle() Throttle {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := Throttle{Strikes: b.strikes}
	if b.strikes > 0 {
		t.Until = b.blocked
		if w := b.blocked.Sub(b.now()); w > 0 {
			t.Wait = w
		}
	}
	return t
}

func (b *Budget) setThrottle(minWait, maxWait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.throttleMin, b.throttleMax = minWait, maxWait
}

// probe is called under b.mu when a request is about to be sent for a throttled credential:
// it alone goes out, and the others wait as if it will earn another 429. Its answer ends
// the wait (answered) or extends it (strike).
func (b *Budget) probe(now time.Time) {
	if b.strikes == 0 {
		return
	}
	b.probeBlock = now.Add(throttleWait(b.strikes, b.throttleMin, b.throttleMax))
	b.blockUntil(b.probeBlock)
}

// liftProbe undoes probe's provisional block. Callers hold b.mu.
func (b *Budget) liftProbe(now time.Time) {
	if !b.probeBlock.IsZero() && b.blocked.Equal(b.probeBlock) {
		b.blocked = now
		b.version++
	}
	b.probeBlock = time.Time{}
}

// answered records that a request sent at sent got an answer other than 429 (ok) or none at
// all (!ok). An answer ends the streak, whatever its status: Bitbucket is serving this
// credential again; but only for a request sent after the last 429 came, since one already
// in flight then proves nothing. It reports the streak that ended, for the log.
func (b *Budget) answered(sent time.Time, ok bool) (ended int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.liftProbe(now)
	if !ok || b.strikes == 0 || sent.Before(b.lastStrike) {
		return 0
	}
	ended, b.strikes = b.strikes, 0
	b.version++
	return ended
}

// strike records a 429 to a request sent at sent and returns how long the credential stays
// quiet: the wait Bitbucket announced when it did, else the next step of the backoff. Only
// a request sent after the previous 429 arrived adds a strike: the ones already in flight
// when the first 429 came were refused for the same reason.
func (b *Budget) strike(sent time.Time, announced time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.liftProbe(now)
	if b.strikes == 0 || sent.After(b.lastStrike) {
		b.strikes++
		b.version++
	}
	b.lastStrike = now
	if announced > 0 {
		return announced
	}
	return throttleWait(b.strikes, b.throttleMin, b.throttleMax)
}

// rateLimitReset reads X-RateLimit-Reset, which some Bitbucket endpoints and proxies send
// with a 429: epoch seconds when the window frees, or seconds from now when the value is
// small. It is honoured like Retry-After, which wins when both are present.
func rateLimitReset(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("X-RateLimit-Reset"))
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var d time.Duration
	if n > 1_000_000_000 { // an epoch time, not a delay
		d = time.Unix(n, 0).Sub(now)
	} else {
		d = time.Duration(min(n, 86400)) * time.Second
	}
	if d <= 0 {
		return 0, false
	}
	return min(d, 24*time.Hour), true
}

// ThrottleOf returns the 429 streak of the credential behind api, when api is a *Client (or
// wraps one and exposes Budget); the zero Throttle otherwise.
func ThrottleOf(api any) Throttle {
	if c, ok := api.(interface{ Budget() *Budget }); ok && c.Budget() != nil {
		return c.Budget().Throttle()
	}
	return Throttle{}
}

// Message says what a throttled credential means for a pool, for its condition and event.
func (t Throttle) Message() string {
	next := "nothing is sent with them for " + t.Wait.Round(time.Second).String()
	if t.Wait <= 0 {
		next = "the next request tries whether Bitbucket answers them again"
	}
	return "Bitbucket answered " + strconv.Itoa(t.Strikes) +
		" requests in a row with these credentials with 429; " + next + " (the wait doubles with each 429 in a row); runners already online keep running"
}
