package bbsim

import "time"

// rateWindow is Bitbucket's rolling one-hour window.
const rateWindow = time.Hour

// rateLimiter keeps, per credential, the times of the calls made in the last
// hour. Bitbucket counts per OAuth consumer, per access token and per user,
// so the key is the credential, not the connection or the IP.
type rateLimiter struct {
	calls map[string][]time.Time
}

func newRateLimiter() *rateLimiter {
	return &rateLimiter{calls: map[string][]time.Time{}}
}

// allow records a call at now when the credential still has budget. used is
// the number of calls counted in the window, including this one. A limit <= 0
// disables limiting. Rejected calls are not counted, so a client that backs
// off gets its budget back an hour after its earliest counted call.
func (l *rateLimiter) allow(key string, now time.Time, limit int) (allowed bool, used int) {
	if limit <= 0 {
		return true, 0
	}
	window := l.calls[key]
	cutoff := now.Add(-rateWindow)
	drop := 0
	for drop < len(window) && !window[drop].After(cutoff) {
		drop++
	}
	window = window[drop:]
	if len(window) >= limit {
		l.calls[key] = window
		return false, len(window)
	}
	window = append(window, now)
	l.calls[key] = window
	return true, len(window)
}
