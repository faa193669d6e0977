package scaling

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Bounds of the backoff between replacements of runners that failed to start.
const (
	// ReplaceBackoffBase is the wait after the first replacement in a row.
	ReplaceBackoffBase = 10 * time.Second
	// ReplaceBackoffMax bounds the wait; a pool whose runners keep failing replaces one every
	// this long. A quiet period as long resets the backoff.
	ReplaceBackoffMax = 10 * time.Minute
)

// ReplaceBackoff is a pool's record of runners replaced because they failed to start (a pod that
// crash-loops, cannot pull its image, or never comes ONLINE). A bad image or a broken node would
// otherwise have every failed runner replaced at every poll: pods and Bitbucket runners created
// and deleted in a loop, the request budget spent on nothing.
type ReplaceBackoff struct {
	// Failures counts replacements in a row.
	Failures int
	// NotBefore is when the next replacement may be.
	NotBefore time.Time
}

// ParseReplaceBackoff reads the pool annotation; anything unreadable is no backoff (a hand
// edit cannot stop replacements for longer than ReplaceBackoffMax either, see Replace).
func ParseReplaceBackoff(s string) ReplaceBackoff {
	n, at, ok := strings.Cut(s, "/")
	if !ok {
		return ReplaceBackoff{}
	}
	failures, err := strconv.Atoi(n)
	if err != nil || failures < 0 {
		return ReplaceBackoff{}
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return ReplaceBackoff{}
	}
	return ReplaceBackoff{Failures: min(failures, 64), NotBefore: t}
}

// String is the annotation's value; "" for no backoff.
func (b ReplaceBackoff) String() string {
	if b.Failures == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%s", b.Failures, b.NotBefore.UTC().Format(time.RFC3339))
}

// Wait is the wait after the Failures-th replacement in a row: ReplaceBackoffBase doubled each
// time, up to ReplaceBackoffMax.
func (b ReplaceBackoff) Wait() time.Duration {
	d := ReplaceBackoffBase
	for i := 1; i < b.Failures && d < ReplaceBackoffMax; i++ {
		d *= 2
	}
	return min(d, ReplaceBackoffMax)
}

// Replace decides how many of the stuck runners to replace now, and the backoff that follows.
// One at a time: the first at once, each next one after the wait, which doubles with each
// replacement in a row. With no runner stuck for a ReplaceBackoffMax after the last wait ended,
// the pool starts afresh. A NotBefore further away than ReplaceBackoffMax (a clock set back, a
// hand edit) counts as ReplaceBackoffMax from now.
func (b ReplaceBackoff) Replace(stuck int, now time.Time) (int, ReplaceBackoff) {
	if b.NotBefore.Sub(now) > ReplaceBackoffMax {
		b.NotBefore = now.Add(ReplaceBackoffMax)
	}
	if stuck == 0 {
		if b.Failures > 0 && now.Sub(b.NotBefore) >= ReplaceBackoffMax {
			return 0, ReplaceBackoff{}
		}
		return 0, b
	}
	if now.Before(b.NotBefore) {
		return 0, b
	}
	next := ReplaceBackoff{Failures: b.Failures + 1}
	next.NotBefore = now.Add(next.Wait())
	return 1, next
}

// RecreatePod decides whether a Runner whose pod is gone gets its next pod now, with the same
// backoff as the pool's replacements: b counts the pods created in a row to replace one that
// ended before the runner came ONLINE or took a step (the Runner's status keeps it, and clears
// it when the runner comes ONLINE, see ServedByPod). hadPod is false for the Runner's first pod,
// which is created at once and starts no count. The first replacement is created at once too (an
// eviction, a one-off crash); each next one waits twice as long, up to ReplaceBackoffMax, so a pod
// that crashes at start is not recreated as fast as the API server and the kubelet allow.
// It returns whether to create the pod now and the record to keep.
func RecreatePod(hadPod bool, b ReplaceBackoff, now time.Time) (bool, ReplaceBackoff) {
	if !hadPod {
		return true, b
	}
	n, next := b.Replace(1, now)
	return n == 1, next
}

// ServedByPod reports whether an observation of the Bitbucket runner shows its current pod (the
// one created at podStart) at work: running a step, or ONLINE since after the pod was created.
// An ONLINE state that changed before the pod was created is the previous pod's agent, which
// Bitbucket shows until it misses its heartbeats; a crashing pod must not pass for a working one
// because of it. A zero stateSince (a list without the time) is taken at its word.
func ServedByPod(online bool, step string, stateSince, podStart time.Time) bool {
	if step != "" {
		return true
	}
	return online && (stateSince.IsZero() || podStart.IsZero() || !stateSince.Before(podStart))
}
