package scaling

import "time"

// MaxPollStretch bounds how far a low budget stretches the poll interval.
const MaxPollStretch = 20

// PollInterval stretches a pool's poll interval when the Bitbucket request budget it shares
// with every pool on the same credential runs low. With a quarter of the hourly budget or more
// left, polls keep their pace; below that the interval grows as the remaining budget shrinks,
// up to MaxPollStretch times, so the budget lasts to the end of the window and the creates and
// deletes that matter (which have a reserve of their own in the client) are never starved.
func PollInterval(base time.Duration, remaining, limit int) time.Duration {
	if limit <= 0 || remaining >= limit/4 {
		return base
	}
	if remaining <= 0 {
		return base * MaxPollStretch
	}
	stretch := float64(limit) / 4 / float64(remaining)
	if stretch > MaxPollStretch {
		stretch = MaxPollStretch
	}
	return time.Duration(float64(base) * stretch)
}
