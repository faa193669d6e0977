package bbsim

import (
	"net/http"
	"testing"
	"time"
)

const rateLimitMessage = "Rate limit for this resource has been exceeded."

func TestHourlyRateLimitPerCredential(t *testing.T) {
	cases := []struct {
		name           string
		retryAfter     time.Duration
		wantRetryAfter string
	}{
		{name: "without Retry-After, as Bitbucket documents it"},
		{name: "with Retry-After", retryAfter: 30 * time.Second, wantRetryAfter: "30"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{HourlyLimit: 3, RetryAfter: tc.retryAfter, AccessTokens: []string{"second-token"}})
			path := wsRunnersPath(DefaultWorkspaceUUID)
			for i := range 3 {
				if resp := e.do(http.MethodGet, path, nil); resp.status != http.StatusOK {
					t.Fatalf("call %d: %d", i+1, resp.status)
				}
				e.clock.Step(10 * time.Minute)
			}
			resp := e.do(http.MethodGet, path, nil)
			if resp.status != http.StatusTooManyRequests || resp.errorMessage(t) != rateLimitMessage {
				t.Fatalf("call over the limit: %d %s", resp.status, resp.body)
			}
			if got := resp.header.Get("Retry-After"); got != tc.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			if resp.header.Get("X-RateLimit-Limit") != "3" || resp.header.Get("X-RateLimit-NearLimit") != "true" {
				t.Errorf("access-token rate headers: %v", resp.header)
			}

			// Another credential has its own budget.
			e.token = "second-token"
			if resp := e.do(http.MethodGet, path, nil); resp.status != http.StatusOK {
				t.Fatalf("second credential: %d", resp.status)
			}
			e.token = testToken

			// The window rolls: an hour after the first call, one slot is free again.
			e.clock.Step(30*time.Minute + time.Second)
			if resp := e.do(http.MethodGet, path, nil); resp.status != http.StatusOK {
				t.Fatalf("after the window rolled: %d", resp.status)
			}
			if resp := e.do(http.MethodGet, path, nil); resp.status != http.StatusTooManyRequests {
				t.Fatalf("only one slot should have freed: %d", resp.status)
			}
			if hits := e.sim.State().RateLimitHits["access-token:#1"]; hits != 2 {
				t.Errorf("rate-limit hits = %d, want 2", hits)
			}
		})
	}
}

func TestTokenEndpointIsNotCountedAgainstTheBudget(t *testing.T) {
	e := newEnv(t, Options{HourlyLimit: 1})
	for i := range 5 {
		if resp := e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil); resp.status != http.StatusOK {
			t.Fatalf("token call %d: %d", i+1, resp.status)
		}
	}
	var tok tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
	e.token = tok.AccessToken
	if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusOK {
		t.Fatalf("first API call: %d", resp.status)
	}
	if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusTooManyRequests {
		t.Fatalf("second API call: %d", resp.status)
	}
	if got := e.sim.State().TokenRequests[DefaultClientID]; got != 6 {
		t.Errorf("token requests = %d, want 6", got)
	}
}

func TestAllOAuthTokensOfAConsumerShareItsBudget(t *testing.T) {
	e := newEnv(t, Options{HourlyLimit: 2})
	for i := range 3 {
		var tok tokenResponse
		e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
		e.token = tok.AccessToken
		resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil)
		want := http.StatusOK
		if i == 2 {
			want = http.StatusTooManyRequests
		}
		if resp.status != want {
			t.Fatalf("call %d with a fresh token: %d, want %d", i+1, resp.status, want)
		}
	}
}

func TestNegativeHourlyLimitDisablesLimiting(t *testing.T) {
	e := newEnv(t, Options{HourlyLimit: -1})
	for i := range 50 {
		if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusOK {
			t.Fatalf("call %d: %d", i+1, resp.status)
		}
	}
	e.sim.SetHourlyLimit(1)
	e.do(http.MethodGet, "/2.0/workspaces/demo", nil)
	if resp := e.do(http.MethodGet, "/2.0/workspaces/demo", nil); resp.status != http.StatusTooManyRequests {
		t.Fatalf("after SetHourlyLimit(1): %d", resp.status)
	}
}
