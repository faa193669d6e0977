package bbsim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fetchToken runs the client-credentials grant, by HTTP Basic or form fields.
func (e *testEnv) fetchToken(id, secret string, basic bool, extra url.Values) response {
	e.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	if !basic {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/site/oauth2/access_token", strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(id, secret)
	}
	return e.send(req)
}

func TestOAuthClientCredentials(t *testing.T) {
	for _, basic := range []bool{true, false} {
		name := map[bool]string{true: "basic", false: "form"}[basic]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Options{})
			resp := e.fetchToken(DefaultClientID, DefaultClientSecret, basic, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("token: %d %s", resp.status, resp.body)
			}
			var tok tokenResponse
			resp.json(t, &tok)
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "bearer" || tok.ExpiresIn != 7200 || tok.State != "client_credentials" || !strings.Contains(tok.Scopes, "runner:write") {
				t.Fatalf("token response %+v", tok)
			}
			e.token = tok.AccessToken
			if got := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil); got.status != http.StatusOK {
				t.Fatalf("API call with the token: %d", got.status)
			}
		})
	}
}

func TestOAuthRejectsWrongCredentialsAndGrants(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name       string
		id, secret string
		extra      url.Values
		want       int
	}{
		{"wrong secret", DefaultClientID, "nope", nil, http.StatusUnauthorized},
		{"unknown client", "someone", DefaultClientSecret, nil, http.StatusUnauthorized},
		{"no client", "", "", nil, http.StatusUnauthorized},
		{"unsupported grant", DefaultClientID, DefaultClientSecret, url.Values{"grant_type": {"password"}}, http.StatusBadRequest},
		{"unknown refresh token", DefaultClientID, DefaultClientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.fetchToken(tc.id, tc.secret, true, tc.extra)
			if resp.status != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.status, tc.want, resp.body)
			}
			resp.errorMessage(t)
		})
	}
}

func TestAccessTokenExpiresAndRefreshes(t *testing.T) {
	e := newEnv(t, Options{TokenTTL: time.Hour})
	var tok tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
	e.token = tok.AccessToken

	e.clock.Advance(time.Hour - time.Second)
	if resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil); resp.status != http.StatusOK {
		t.Fatalf("before expiry: %d", resp.status)
	}
	e.clock.Advance(time.Second)
	resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	if resp.status != http.StatusUnauthorized || resp.errorMessage(t) != "Access token expired." {
		t.Fatalf("after expiry: %d %s", resp.status, resp.body)
	}

	var refreshed tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}).json(t, &refreshed)
	e.token = refreshed.AccessToken
	if resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil); resp.status != http.StatusOK {
		t.Fatalf("with the refreshed token: %d", resp.status)
	}
}

func TestAPIAuthentication(t *testing.T) {
	e := newEnv(t, Options{
		BasicUsers:     map[string]string{"ci-bot": "app-password"},
		ReadOnlyTokens: []string{"read-only"},
	})
	path := wsRunnersPath(DefaultWorkspaceUUID)
	cases := []struct {
		name   string
		method string
		auth   func(*http.Request)
		want   int
	}{
		{"no credentials", http.MethodGet, func(*http.Request) {}, http.StatusUnauthorized},
		{"unknown bearer token", http.MethodGet, bearer("guess"), http.StatusUnauthorized},
		{"refresh token used as access token", http.MethodGet, bearer(e.refreshTokenFor(t)), http.StatusUnauthorized},
		{"access token", http.MethodPost, bearer(testToken), http.StatusOK},
		{"basic app password", http.MethodPost, basicAuth("ci-bot", "app-password"), http.StatusOK},
		{"basic wrong password", http.MethodGet, basicAuth("ci-bot", "wrong"), http.StatusUnauthorized},
		{"read-only token reads", http.MethodGet, bearer("read-only"), http.StatusOK},
		{"read-only token writes", http.MethodPost, bearer("read-only"), http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req *http.Request
			var err error
			if tc.method == http.MethodPost {
				req, err = http.NewRequest(tc.method, e.http.URL+path, strings.NewReader(`{"name":"r","labels":["self.hosted","linux"]}`))
			} else {
				req, err = http.NewRequest(tc.method, e.http.URL+path, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.auth(req)
			resp := e.send(req)
			if resp.status != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.status, tc.want, resp.body)
			}
			if tc.want >= 400 {
				resp.errorMessage(t)
			}
		})
	}
}

func (e *testEnv) refreshTokenFor(t *testing.T) string {
	var tok tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
	return tok.RefreshToken
}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

func basicAuth(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

func TestCallsAreCountedPerEndpointAndCredentialWithoutSecrets(t *testing.T) {
	e := newEnv(t, Options{})
	e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID)+"/", nil)
	var tok tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
	e.token = tok.AccessToken
	e.do(http.MethodGet, "/2.0/workspaces/demo", nil)

	state := e.sim.State()
	const list = "GET /internal/workspaces/{ws}/pipelines-config/runners"
	if state.Calls[list] != 2 {
		t.Errorf("calls[%q] = %d, want 2 (trailing slash counted with the plain path); all: %v", list, state.Calls[list], state.Calls)
	}
	if got := state.CallsByCredential["access-token:#1"][list]; got != 2 {
		t.Errorf("access token calls = %d, want 2: %v", got, state.CallsByCredential)
	}
	if got := state.CallsByCredential["oauth:"+DefaultClientID]["GET /2.0/workspaces/{ws}"]; got != 1 {
		t.Errorf("oauth calls = %d, want 1: %v", got, state.CallsByCredential)
	}
	for cred := range state.CallsByCredential {
		if strings.Contains(cred, testToken) || strings.Contains(cred, tok.AccessToken) {
			t.Errorf("credential key %q contains a secret", cred)
		}
	}
}

func TestThrottleAnswersOneCredential429WithoutRetryAfter(t *testing.T) {
	e := newEnv(t, Options{})
	e.sim.Throttle("access-token:#1", true)
	resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != "" {
		t.Fatalf("throttled credential: status %d, Retry-After %q; want 429 without it", resp.status, resp.header.Get("Retry-After"))
	}
	var tok tokenResponse
	e.fetchToken(DefaultClientID, DefaultClientSecret, true, nil).json(t, &tok)
	saved := e.token
	e.token = tok.AccessToken
	other := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	e.token = saved
	if other.status != http.StatusOK {
		t.Errorf("another credential: status %d, want 200", other.status)
	}
	if hits := e.sim.State().RateLimitHits["access-token:#1"]; hits != 1 {
		t.Errorf("RateLimitHits = %d, want 1", hits)
	}
	e.sim.Throttle("access-token:#1", false)
	if resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil); resp.status != http.StatusOK {
		t.Errorf("after the throttle: status %d", resp.status)
	}
}

func TestForce429WithoutRetryAfter(t *testing.T) {
	e := newEnv(t, Options{Faults: Faults{Force429: true, NoRetryAfter: true}})
	resp := e.do(http.MethodGet, wsRunnersPath(DefaultWorkspaceUUID), nil)
	if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != "" {
		t.Fatalf("status %d, Retry-After %q; want 429 without it", resp.status, resp.header.Get("Retry-After"))
	}
}
