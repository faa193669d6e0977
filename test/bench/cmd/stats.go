package main

import (
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile of values (p in (0, 100]): the smallest value with
// at least p% of the values at or below it, so that p95 of 20 waits is the 19th smallest and
// always one of the waits measured. It is NaN for no values.
func percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// excessWaits returns, rank by rank, how much longer each wait was than the least it could have
// been: with capacity runners ready at once and every step lasting duration, the k-th step to
// start (from 0) cannot start before (k / capacity) * duration. What remains is the wait the
// autoscaler added; with more steps than runners, the raw waits also hold the time steps spend
// queued behind full capacity, which no autoscaler can remove.
func excessWaits(waits []float64, capacity int, duration time.Duration) []float64 {
	if capacity < 1 {
		capacity = 1
	}
	sorted := slices.Clone(waits)
	slices.Sort(sorted)
	out := make([]float64, len(sorted))
	for k, w := range sorted {
		least := float64(k/capacity) * duration.Seconds()
		out[k] = math.Max(0, w-least)
	}
	return out
}

// peak keeps the largest value seen.
type peak int

func (p *peak) see(v int) {
	if v > int(*p) {
		*p = peak(v)
	}
}
