package bitbucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// authorizer puts credentials on a request. The returned string identifies the
// token that was used, so a 401 can invalidate exactly that token and not one
// that a concurrent caller fetched a moment later.
type authorizer interface {
	authorize(ctx context.Context, req *http.Request) (tokenUsed string, err error)
	// invalidate drops a cached token after a 401; it reports whether a fresh
	// credential can be obtained (only the OAuth grant can).
	invalidate(tokenUsed string) bool
}

type bearerAuth struct{ token string }

func (a bearerAuth) authorize(_ context.Context, req *http.Request) (string, error) {
	req.Header.Set("Authorization", "Bearer "+a.token)
	return "", nil
}

func (bearerAuth) invalidate(string) bool { return false }

type basicAuth struct{ username, password string }

func (a basicAuth) authorize(_ context.Context, req *http.Request) (string, error) {
	req.SetBasicAuth(a.username, a.password)
	return "", nil
}

func (basicAuth) invalidate(string) bool { return false }

// tokenFetchError is a failed client-credentials grant. Retryable failures
// (network, 5xx) are retried by the request loop like any transient error:
// nothing reached the API, so even a POST may be retried.
type tokenFetchError struct {
	err       error
	retryable bool
}

func (e *tokenFetchError) Error() string { return "fetch OAuth access token: " + e.err.Error() }
func (e *tokenFetchError) Unwrap() error { return e.err }

// oauthTokenSource runs the client-credentials grant and caches the token.
// Concurrent callers share one fetch: the first caller to find no valid token
// starts it, the others wait on the same channel. Without that, every
// reconciler goroutine would request its own token at expiry.
type oauthTokenSource struct {
	clientID, clientSecret string
	tokenURL               string
	httpClient             *http.Client
	timeout                time.Duration
	userAgent              string
	now                    func() time.Time
	metrics                *Metrics
	redact                 func(string) string

	mu       sync.Mutex
	token    string
	expiry   time.Time // zero: valid until a 401
	inflight *tokenFetch
}

type tokenFetch struct {
	done  chan struct{}
	token string
	err   error
}

// refreshMargin is how long before expiry a cached token is replaced: the
// smaller of 5 minutes and 10% of its lifetime, so a 2 h Bitbucket token is
// renewed at 1 h 55 m and a 2 s test token at 1.8 s.
func refreshMargin(lifetime time.Duration) time.Duration {
	margin := lifetime / 10
	if margin > 5*time.Minute {
		margin = 5 * time.Minute
	}
	return margin
}

func (s *oauthTokenSource) authorize(ctx context.Context, req *http.Request) (string, error) {
	token, err := s.get(ctx)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return token, nil
}

func (s *oauthTokenSource) invalidate(tokenUsed string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == tokenUsed {
		s.token = ""
		s.expiry = time.Time{}
	}
	return true
}

func (s *oauthTokenSource) get(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.token != "" && (s.expiry.IsZero() || s.now().Before(s.expiry)) {
		token := s.token
		s.mu.Unlock()
		return token, nil
	}
	fetch := s.inflight
	if fetch == nil {
		fetch = &tokenFetch{done: make(chan struct{})}
		s.inflight = fetch
		// The fetch runs detached from this caller's context: if the first
		// caller gives up, the callers queued behind it still get a token.
		go s.run(fetch)
	}
	s.mu.Unlock()

	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-fetch.done:
		return fetch.token, fetch.err
	}
}

func (s *oauthTokenSource) run(fetch *tokenFetch) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	token, lifetime, err := s.fetch(ctx)

	s.mu.Lock()
	if err == nil {
		s.token = token
		s.expiry = time.Time{}
		if lifetime > 0 {
			s.expiry = s.now().Add(lifetime - refreshMargin(lifetime))
		}
	}
	s.inflight = nil
	s.mu.Unlock()

	fetch.token, fetch.err = token, err
	close(fetch.done)
}

func (s *oauthTokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	const endpoint = "oauth.token"
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &tokenFetchError{err: fmt.Errorf("build request: %w", err)}
	}
	req.SetBasicAuth(s.clientID, s.clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", s.userAgent)

	start := time.Now()
	resp, err := s.httpClient.Do(req)
	if err != nil {
		s.metrics.observe(endpoint, http.MethodPost, codeNetworkError, time.Since(start))
		// A *url.Error carries the token URL, which holds no secret; the
		// redactor still runs in case a proxy echoes something back.
		return "", 0, &tokenFetchError{err: errors.New(s.redact(err.Error())), retryable: true}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	s.metrics.observe(endpoint, http.MethodPost, statusCode(resp.StatusCode), time.Since(start))
	if err != nil {
		return "", 0, &tokenFetchError{err: fmt.Errorf("read response: %s", s.redact(err.Error())), retryable: true}
	}
	if resp.StatusCode/100 != 2 {
		apiErr := decodeAPIError(http.MethodPost, endpoint, resp.StatusCode, resp.Header, body, s.now())
		apiErr.Message, apiErr.Detail = s.redact(apiErr.Message), s.redact(apiErr.Detail)
		// Bitbucket answers a bad client id or secret with 400 invalid_client
		// or 401; either way retrying cannot help and the caller must see an
		// unauthorized error.
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
			apiErr.StatusCode = http.StatusUnauthorized
		}
		return "", 0, &tokenFetchError{err: apiErr, retryable: retryableStatus(resp.StatusCode)}
	}
	var grant struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   any    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &grant); err != nil {
		return "", 0, &tokenFetchError{err: fmt.Errorf("decode token response: %w", err)}
	}
	if grant.AccessToken == "" {
		return "", 0, &tokenFetchError{err: errors.New("token response has no access_token")}
	}
	if grant.TokenType != "" && !strings.EqualFold(grant.TokenType, "bearer") {
		return "", 0, &tokenFetchError{err: fmt.Errorf("unsupported token type %q", grant.TokenType)}
	}
	return grant.AccessToken, expiresIn(grant.ExpiresIn), nil
}

// expiresIn accepts a number or a numeric string; unknown means "until a 401".
func expiresIn(v any) time.Duration {
	switch n := v.(type) {
	case float64:
		if n > 0 && n < 1e7 {
			return time.Duration(n * float64(time.Second))
		}
	case string:
		var f float64
		if _, err := fmt.Sscanf(n, "%g", &f); err == nil && f > 0 && f < 1e7 {
			return time.Duration(f * float64(time.Second))
		}
	}
	return 0
}

// retryableStatus: 429 and 5xx are transient; everything else is an answer.
func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}
