package bitbucket

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// backoff returns the sleep before retry number `retry` (1 for the first
// retry): exponential from min, capped at max, with "equal jitter" so that the
// wait is at least half the exponential value. Pure jitter (0..d) can retry
// almost at once, which is what a server shedding load does not want; no
// jitter makes every operator replica retry in lockstep. jitter is in [0,1).
func backoff(retry int, minDelay, maxDelay time.Duration, jitter float64) time.Duration {
	if retry < 1 {
		retry = 1
	}
	if minDelay <= 0 {
		return 0
	}
	if maxDelay < minDelay {
		maxDelay = minDelay
	}
	exp := float64(minDelay) * math.Pow(2, float64(retry-1))
	if exp > float64(maxDelay) || math.IsInf(exp, 0) || math.IsNaN(exp) {
		exp = float64(maxDelay)
	}
	if jitter < 0 || jitter >= 1 || math.IsNaN(jitter) {
		jitter = 0
	}
	half := exp / 2
	return time.Duration(half + half*jitter)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 section 10.2.3). A date in the past means "now".
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		// Anything beyond a day is nonsense for an hourly window; clamp to keep
		// the Duration from overflowing.
		if secs > 86400 {
			secs = 86400
		}
		return time.Duration(secs) * time.Second, true
	}
	if at, err := http.ParseTime(value); err == nil {
		d := at.Sub(now)
		if d < 0 {
			d = 0
		}
		if d > 24*time.Hour {
			d = 24 * time.Hour
		}
		return d, true
	}
	return 0, false
}

// sleepCtx waits for d or until ctx ends, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// idempotent methods may be resent after any transient failure: a second GET,
// PUT state or DELETE leaves Bitbucket as the first one would have.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}
