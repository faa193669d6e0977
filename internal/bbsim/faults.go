package bbsim

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Faults describes the trouble injected into Bitbucket paths (never into the
// /_sim/ admin API). Rates are probabilities in [0,1] drawn per request.
type Faults struct {
	// ErrorRate is the share of requests answered with a server error.
	ErrorRate float64
	// ErrorCodes are the statuses to pick from; default 500, 502, 503.
	ErrorCodes []int
	// Latency is added before every answer.
	Latency time.Duration
	// DropRate is the share of requests whose connection is closed without an answer.
	DropRate float64
	// Force429 answers every API call (not the token endpoint) with 429 and Retry-After.
	Force429 bool
	// NoRetryAfter leaves Retry-After out of Force429's answers, as Bitbucket does when a
	// credential is over its hourly limit: the client has to pick its own wait.
	NoRetryAfter bool
	// Seed makes the draws repeatable; 0 picks a random seed.
	Seed int64
}

var defaultErrorCodes = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}

// stormRetryAfter is announced during a forced 429 storm when Options.RetryAfter is unset:
// the point of a storm is to test that the client honours the header.
const stormRetryAfter = time.Second

type faultInjector struct {
	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
}

func newFaultInjector(f Faults) *faultInjector {
	fi := &faultInjector{}
	fi.set(f)
	return fi
}

func (fi *faultInjector) set(f Faults) {
	seed := uint64(f.Seed)
	if f.Seed == 0 {
		seed = rand.Uint64()
	}
	if len(f.ErrorCodes) == 0 {
		f.ErrorCodes = defaultErrorCodes
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.faults = f
	fi.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func (fi *faultInjector) get() Faults {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.faults
}

type faultAction int

const (
	faultNone faultAction = iota
	faultDrop
	faultError
	faultStorm
)

// decide draws the fate of one request. The draws happen in a fixed order
// under one lock so that a given seed and request sequence repeat exactly.
func (fi *faultInjector) decide(isTokenEndpoint bool) (faultAction, int, time.Duration) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	f := fi.faults
	dropDraw, errDraw := fi.rng.Float64(), fi.rng.Float64()
	code := f.ErrorCodes[fi.rng.IntN(len(f.ErrorCodes))]
	switch {
	case f.DropRate > 0 && dropDraw < f.DropRate:
		return faultDrop, 0, f.Latency
	case f.Force429 && !isTokenEndpoint:
		return faultStorm, 0, f.Latency
	case f.ErrorRate > 0 && errDraw < f.ErrorRate:
		return faultError, code, f.Latency
	}
	return faultNone, 0, f.Latency
}

// inject applies the configured faults to one request; it reports whether it
// answered (or dropped) the request itself.
func (fi *faultInjector) inject(w http.ResponseWriter, r *http.Request, stormRetry time.Duration) bool {
	action, code, latency := fi.decide(strings.HasPrefix(r.URL.Path, "/site/oauth2/"))
	if fi.get().NoRetryAfter {
		stormRetry = 0
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return true
		}
	}
	switch action {
	case faultDrop:
		dropConnection(w)
		return true
	case faultStorm:
		if stormRetry > 0 {
			w.Header().Set("Retry-After", formatSeconds(stormRetry))
		}
		writeError(w, http.StatusTooManyRequests, "Rate limit for this resource has been exceeded.")
		return true
	case faultError:
		writeServerError(w, code)
		return true
	}
	return false
}

// writeServerError answers like the layer that would fail in production: the
// application answers 500 with its JSON envelope, while 502/503 come from the
// edge as plain text, so clients must not assume a JSON body.
func writeServerError(w http.ResponseWriter, code int) {
	if code == http.StatusInternalServerError {
		writeError(w, code, "Something went wrong")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(http.StatusText(code) + "\n"))
}

// dropConnection closes the TCP connection without an answer. Where the
// connection cannot be hijacked (HTTP/2), aborting the handler resets the stream.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func (s *Server) retryAfterForStorm() time.Duration {
	if s.opts.RetryAfter > 0 {
		return s.opts.RetryAfter
	}
	return stormRetryAfter
}

// SetFaults replaces the injected faults at run time.
func (s *Server) SetFaults(f Faults) {
	s.faults.set(f)
	s.log.Info("faults changed", "errorRate", f.ErrorRate, "latency", f.Latency, "dropRate", f.DropRate, "force429", f.Force429, "seed", f.Seed)
}
