package bbsim

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestFaultsHitAPIPathsOnly(t *testing.T) {
	cases := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, e *testEnv)
	}{
		{
			name:   "server errors",
			faults: Faults{ErrorRate: 1, ErrorCodes: []int{http.StatusServiceUnavailable}},
			check: func(t *testing.T, e *testEnv) {
				if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusServiceUnavailable {
					t.Fatalf("API: %d", resp.status)
				}
			},
		},
		{
			name:   "500 carries the JSON envelope",
			faults: Faults{ErrorRate: 1, ErrorCodes: []int{http.StatusInternalServerError}},
			check: func(t *testing.T, e *testEnv) {
				resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil)
				if resp.status != http.StatusInternalServerError {
					t.Fatalf("API: %d", resp.status)
				}
				resp.errorMessage(t)
			},
		},
		{
			name:   "dropped connections",
			faults: Faults{DropRate: 1},
			check: func(t *testing.T, e *testEnv) {
				req, _ := http.NewRequest(http.MethodGet, e.http.URL+"/2.0/workspaces/demo", nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := e.http.Client().Do(req)
				if err == nil {
					_ = resp.Body.Close()
					t.Fatalf("request answered %d, want a dropped connection", resp.StatusCode)
				}
			},
		},
		{
			name:   "forced 429 storm with Retry-After spares the token endpoint",
			faults: Faults{Force429: true},
			check: func(t *testing.T, e *testEnv) {
				resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil)
				if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") == "" || resp.errorMessage(t) != rateLimitMessage {
					t.Fatalf("API during a storm: %d %v %s", resp.status, resp.header, resp.body)
				}
				if tok := e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil); tok.status != http.StatusOK {
					t.Fatalf("token endpoint during a storm: %d", tok.status)
				}
			},
		},
		{
			name:   "latency",
			faults: Faults{Latency: 30 * time.Millisecond},
			check: func(t *testing.T, e *testEnv) {
				start := time.Now()
				if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusOK {
					t.Fatalf("API: %d", resp.status)
				}
				if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
					t.Fatalf("answered after %s, before the added latency", elapsed)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Faults: tc.faults})
			tc.check(t, e)
			if resp := e.do(http.MethodGet, "/_sim/state", nil); resp.status != http.StatusOK {
				t.Fatalf("admin API affected by faults: %d", resp.status)
			}
			e.sim.SetFaults(Faults{})
			if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusOK {
				t.Fatalf("after clearing faults: %d", resp.status)
			}
		})
	}
}

func TestFaultsRepeatWithTheSameSeed(t *testing.T) {
	statuses := func(seed int64) []int {
		e := newEnv(t, Options{Faults: Faults{ErrorRate: 0.5, Seed: seed}})
		var out []int
		for range 40 {
			out = append(out, e.do(http.MethodGet, "/2.0/workspaces/demo", nil).status)
		}
		return out
	}
	first, second := statuses(42), statuses(42)
	if !slices.Equal(first, second) {
		t.Fatalf("same seed, different faults:\n%v\n%v", first, second)
	}
	if !slices.Contains(first, http.StatusOK) || !slices.ContainsFunc(first, func(s int) bool { return s >= 500 }) {
		t.Fatalf("error rate 0.5 gave no mix of answers in 40 calls: %v", first)
	}
}
