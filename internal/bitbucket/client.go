package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Defaults for Config.
const (
	DefaultBaseURL      = "https://api.bitbucket.org"
	DefaultTokenURL     = "https://bitbucket.org/site/oauth2/access_token"
	DefaultTimeout      = 15 * time.Second
	DefaultMaxAttempts  = 4
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultMaxRetryWait = 2 * time.Minute
	// DefaultMaxPipelinePages bounds one ListPipelines call: two pages of 100
	// is more running pipelines than a repository plausibly has, and each
	// page costs one request of the hourly budget.
	DefaultMaxPipelinePages = 2

	// maxListPages guards lists that must be complete (runners, steps,
	// repositories) against a server that never stops sending `next`.
	maxListPages = 100
	maxJSONBody  = 8 << 20
	maxFileBody  = 4 << 20
)

// Config configures a Client. Only Credentials is required.
type Config struct {
	BaseURL     string        // default https://api.bitbucket.org
	TokenURL    string        // default https://bitbucket.org/site/oauth2/access_token
	Credentials Credentials   // exactly one mode set
	HTTPClient  *http.Client  // optional; its Timeout should be 0 (Timeout below applies per attempt)
	Timeout     time.Duration // per attempt, default 15s
	MaxAttempts int           // attempts per call including the first, default 4
	// HourlyLimit is the request budget per credential per rolling hour,
	// default 1000; negative disables the budget. Shared through Budgets.
	HourlyLimit int
	Logger      logr.Logger
	Metrics     *Metrics // optional

	// Version goes into the User-Agent, runnerpool-operator/<version>.
	Version string
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (defaults 500ms and 30s); tests shrink them.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryWait caps the total time one call spends sleeping between
	// attempts (default 2m). A Retry-After longer than what is left is not
	// waited out: the call returns the 429 so the caller can requeue.
	MaxRetryWait time.Duration
	// ThrottleMin and ThrottleMax bound the backoff of a credential that
	// Bitbucket answers with 429 without saying how long to wait (defaults
	// 5s and 5m): each 429 in a row doubles it. Shared through Budgets.
	ThrottleMin, ThrottleMax time.Duration
	// MaxPipelinePages bounds ListPipelines (default 2 pages of 100).
	MaxPipelinePages int
	// Budgets is the registry the budget comes from; default DefaultBudgets.
	Budgets *BudgetRegistry
	// Now is the clock for the budget, token expiry and Retry-After dates;
	// default time.Now.
	Now func() time.Time
}

// Client talks to the Bitbucket Cloud API. It is safe for concurrent use.
type Client struct {
	baseURL          *url.URL
	httpClient       *http.Client
	auth             authorizer
	budget           *Budget
	budgets          *BudgetRegistry
	budgetKey        string
	log              logr.Logger
	metrics          *Metrics
	userAgent        string
	timeout          time.Duration
	maxAttempts      int
	minBackoff       time.Duration
	maxBackoff       time.Duration
	maxRetryWait     time.Duration
	maxPipelinePages int
	now              func() time.Time
	secrets          []string
}

// New validates cfg, fills defaults and returns a client. It sends nothing.
func New(cfg Config) (*Client, error) {
	mode, err := cfg.Credentials.mode()
	if err != nil {
		return nil, err
	}
	base, err := parseBaseURL(cfg.BaseURL, DefaultBaseURL, "base URL")
	if err != nil {
		return nil, err
	}
	tokenURL, err := parseBaseURL(cfg.TokenURL, DefaultTokenURL, "token URL")
	if err != nil {
		return nil, err
	}
	c := &Client{
		baseURL:          base,
		httpClient:       cfg.HTTPClient,
		log:              cfg.Logger,
		metrics:          cfg.Metrics,
		timeout:          orDefault(cfg.Timeout, DefaultTimeout),
		maxAttempts:      cfg.MaxAttempts,
		minBackoff:       orDefault(cfg.MinBackoff, DefaultMinBackoff),
		maxBackoff:       orDefault(cfg.MaxBackoff, DefaultMaxBackoff),
		maxRetryWait:     orDefault(cfg.MaxRetryWait, DefaultMaxRetryWait),
		maxPipelinePages: cfg.MaxPipelinePages,
		now:              cfg.Now,
		secrets:          cfg.Credentials.secrets(),
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{}
	}
	if c.log.GetSink() == nil {
		c.log = logr.Discard()
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxPipelinePages <= 0 {
		c.maxPipelinePages = DefaultMaxPipelinePages
	}
	if c.now == nil {
		c.now = time.Now
	}
	version := cfg.Version
	if version == "" {
		version = "dev"
	}
	c.userAgent = "runnerpool-operator/" + version

	switch mode {
	case AuthOAuth:
		c.auth = &oauthTokenSource{
			clientID:     cfg.Credentials.OAuthClientID,
			clientSecret: cfg.Credentials.OAuthClientSecret,
			tokenURL:     tokenURL.String(),
			httpClient:   c.httpClient,
			timeout:      c.timeout,
			userAgent:    c.userAgent,
			now:          c.now,
			metrics:      c.metrics,
			redact:       c.redact,
		}
	case AuthAccessToken:
		c.auth = bearerAuth{token: cfg.Credentials.AccessToken}
	case AuthBasic:
		c.auth = basicAuth{username: cfg.Credentials.Username, password: cfg.Credentials.Password}
	}

	limit := cfg.HourlyLimit
	if limit == 0 {
		limit = DefaultHourlyLimit
	}
	registry := cfg.Budgets
	if registry == nil {
		registry = DefaultBudgets
	}
	key := cfg.Credentials.budgetKey(base.String())
	c.budgets, c.budgetKey = registry, key
	c.budget = registry.Get(key, limit, c.now)
	c.budget.setThrottle(orDefault(cfg.ThrottleMin, DefaultThrottleMin), orDefault(cfg.ThrottleMax, DefaultThrottleMax))
	c.metrics.trackBudget(key, c.budget)
	return c, nil
}

func parseBaseURL(raw, def, what string) (*url.URL, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil {
		return nil, fmt.Errorf("bitbucket %s: %w", what, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bitbucket %s: need an absolute http(s) URL", what)
	}
	if u.User != nil {
		return nil, fmt.Errorf("bitbucket %s: must not carry user info; use Credentials", what)
	}
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Budget is the hourly request budget this client shares with every other
// client for the same credential and Bitbucket endpoint.
func (c *Client) Budget() *Budget { return c.budget }

// BudgetKey names the budget in its registry: a SHA-256 of the endpoint and the credential's
// identity, never the secret.
func (c *Client) BudgetKey() string { return c.budgetKey }

// redact removes the client's own secrets from text that came from elsewhere
// (an error body, a transport error) before it goes into an error or a log.
func (c *Client) redact(s string) string {
	for _, secret := range c.secrets {
		s = strings.ReplaceAll(s, secret, "[REDACTED]")
	}
	return s
}

// apiRequest is one logical call; do turns it into one or more attempts.
type apiRequest struct {
	method   string
	endpoint string // route template for errors, logs and metrics
	url      *url.URL
	body     []byte
	accept   string
	maxBody  int64
}

type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends req with retries:
//   - network errors and 5xx: retried with jittered exponential backoff, but
//     only for GET/PUT/DELETE. A POST (runner create) is retried only when
//     the request provably never left this process (no header was written,
//     e.g. the dial failed): if Bitbucket saw the first create, a second one
//     makes a duplicate runner that counts toward the 100-runner cap and has
//     no pod. The caller then adopts by name instead.
//   - 429: a strike on the credential (throttle.go), which blocks the shared
//     budget for Retry-After (or X-RateLimit-Reset) when given, else for the
//     credential's exponential backoff. With a Retry-After the call waits and
//     retries (any method: the server refused without acting); without one it
//     returns at once, RetryAfter set to the backoff, for the caller to requeue.
//   - 401 with OAuth: the token is dropped and the call retried once.
//
// Attempts stop at MaxAttempts, or when the next sleep would exceed
// MaxRetryWait in total; a cancelled ctx stops a sleep at once.
func (c *Client) do(ctx context.Context, req apiRequest) (*apiResponse, error) {
	priority := priorityFor(ctx, req.method)
	log := c.log.WithValues("method", req.method, "endpoint", req.endpoint)
	if err := c.budgets.wait(ctx); err != nil {
		return nil, fmt.Errorf("bitbucket %s %s: %w", req.method, req.endpoint, err)
	}
	var (
		lastErr     error
		waited      time.Duration
		refreshed   bool
		afterLimit  bool // the previous attempt waited out a 429
		attempt     int
		failedTries int
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, c.cancelled(req, err, lastErr)
		}
		stamp, wait, ok := c.budget.takeStamped(priority, !afterLimit)
		if !ok {
			c.metrics.budgetRefused(req.endpoint, priority)
			return nil, &BudgetExhaustedError{Method: req.method, Endpoint: req.endpoint, Priority: priority, RetryAfter: wait}
		}
		attempt++
		resp, tokenUsed, wrote, err := c.attempt(ctx, req)
		afterLimit = false
		if err != nil && !wrote {
			c.budget.refund(stamp)
		}
		switch {
		case err != nil:
			c.budget.answered(stamp, false)
		case resp.status != http.StatusTooManyRequests:
			if n := c.budget.answered(stamp, true); n > 0 {
				log.Info("bitbucket answers this credential again after a run of 429s", "credential", credentialLabel(c.budgetKey), "consecutive429s", n)
			}
		}

		var delay time.Duration
		var reason string
		var fetchErr *tokenFetchError
		switch {
		case errors.As(err, &fetchErr):
			lastErr = fmt.Errorf("bitbucket %s %s: %w", req.method, req.endpoint, err)
			if !fetchErr.retryable || ctx.Err() != nil {
				return nil, lastErr
			}
			reason = "token_error"
		case err != nil:
			if ctx.Err() != nil {
				return nil, c.cancelled(req, ctx.Err(), err)
			}
			lastErr = fmt.Errorf("bitbucket %s %s: %w", req.method, req.endpoint, err)
			if !idempotent(req.method) && wrote {
				return nil, fmt.Errorf("%w (not retried: the request may have reached Bitbucket)", lastErr)
			}
			reason = "network_error"
		case resp.status/100 == 2:
			return resp, nil
		default:
			apiErr := decodeAPIError(req.method, req.endpoint, resp.status, resp.header, resp.body, c.now())
			apiErr.Message, apiErr.Detail = c.redact(apiErr.Message), c.redact(apiErr.Detail)
			lastErr = apiErr
			switch {
			case resp.status == http.StatusUnauthorized && !refreshed && c.auth.invalidate(tokenUsed):
				// Tokens can be revoked or expire early; one fresh token is
				// worth one more request, a second 401 is the real answer.
				refreshed = true
				c.metrics.retry(req.endpoint, "token_refresh")
				log.V(1).Info("bitbucket rejected the access token; fetching a new one")
				continue
			case resp.status == http.StatusTooManyRequests:
				if apiErr.RetryAfter <= 0 {
					if d, ok := rateLimitReset(resp.header, c.now()); ok {
						apiErr.RetryAfter = d
					}
				}
				announced := apiErr.RetryAfter > 0
				delay = c.budget.strike(stamp, apiErr.RetryAfter)
				c.budget.exhausted(delay, announced)
				log.Error(apiErr, "bitbucket is throttling this credential; nothing is sent with it until the wait is over",
					"credential", credentialLabel(c.budgetKey), "consecutive429s", c.budget.Throttle().Strikes, "wait", delay.String())
				if !announced {
					// Not retried here: the whole credential waits, and the caller
					// requeues after RetryAfter rather than hold a worker that long.
					apiErr.RetryAfter = delay
					return nil, apiErr
				}
				reason = "rate_limited"
			case resp.status >= 500 && idempotent(req.method):
				delay = apiErr.RetryAfter
				reason = "server_error"
			default:
				return nil, apiErr
			}
		}

		failedTries++
		if delay <= 0 {
			delay = c.backoff(failedTries)
		}
		if attempt >= c.maxAttempts+boolInt(refreshed) {
			return nil, lastErr
		}
		if waited+delay > c.maxRetryWait {
			log.V(1).Info("not retrying: wait would exceed the retry budget", "reason", reason, "delay", delay, "waited", waited)
			return nil, lastErr
		}
		log.V(1).Info("retrying bitbucket request", "reason", reason, "attempt", attempt, "delay", delay, "error", lastErr.Error())
		c.metrics.retry(req.endpoint, reason)
		if reason == "rate_limited" {
			c.metrics.rateLimitWait(req.endpoint, delay)
			afterLimit = true
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, c.cancelled(req, err, lastErr)
		}
		waited += delay
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *Client) backoff(retry int) time.Duration {
	return backoff(retry, c.minBackoff, c.maxBackoff, rand.Float64())
}

func (c *Client) cancelled(req apiRequest, ctxErr, lastErr error) error {
	if lastErr == nil {
		return fmt.Errorf("bitbucket %s %s: %w", req.method, req.endpoint, ctxErr)
	}
	return fmt.Errorf("bitbucket %s %s: %w; last attempt: %w", req.method, req.endpoint, ctxErr, lastErr)
}

// attempt sends one HTTP request. wrote reports whether any part of it may
// have reached the server.
func (c *Client) attempt(ctx context.Context, req apiRequest) (resp *apiResponse, tokenUsed string, wrote bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var headersWritten atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { headersWritten.Store(true) },
	})

	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.method, req.url.String(), body)
	if err != nil {
		return nil, "", false, fmt.Errorf("build request: %w", err)
	}
	httpReq.Header.Set("User-Agent", c.userAgent)
	httpReq.Header.Set("Accept", req.accept)
	if req.body != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	tokenUsed, err = c.auth.authorize(ctx, httpReq)
	if err != nil {
		return nil, "", false, err
	}

	start := time.Now()
	httpResp, err := c.httpClient.Do(httpReq)
	if err != nil {
		c.metrics.observe(req.endpoint, req.method, codeNetworkError, time.Since(start))
		return nil, tokenUsed, headersWritten.Load(), c.transportError(err)
	}
	defer func() { _ = httpResp.Body.Close() }()
	limit := req.maxBody
	if limit <= 0 {
		limit = maxJSONBody
	}
	data, err := io.ReadAll(io.LimitReader(httpResp.Body, limit+1))
	elapsed := time.Since(start)
	c.budget.observeHeaders(httpResp.Header)
	c.metrics.observe(req.endpoint, req.method, statusCode(httpResp.StatusCode), elapsed)
	c.log.V(1).Info("bitbucket request", "method", req.method, "endpoint", req.endpoint, "path", req.url.EscapedPath(),
		"status", httpResp.StatusCode, "duration", elapsed)
	if err != nil {
		return nil, tokenUsed, true, fmt.Errorf("read response: %w", c.transportError(err))
	}
	if int64(len(data)) > limit {
		return nil, tokenUsed, true, fmt.Errorf("response larger than %d bytes", limit)
	}
	return &apiResponse{status: httpResp.StatusCode, header: httpResp.Header, body: data}, tokenUsed, true, nil
}

// transportError drops the *url.Error wrapper, whose text repeats the full
// URL, and keeps the cause (still inspectable with errors.Is/As).
func (c *Client) transportError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	if redacted := c.redact(err.Error()); redacted != err.Error() {
		return errors.New(redacted)
	}
	return err
}

// getJSON sends a GET and decodes the JSON answer into out.
func (c *Client) getJSON(ctx context.Context, endpoint string, u *url.URL, out any) error {
	resp, err := c.do(ctx, apiRequest{method: http.MethodGet, endpoint: endpoint, url: u, accept: "application/json"})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("bitbucket GET %s: decode response: %w", endpoint, err)
	}
	return nil
}

// page is Bitbucket's paged envelope.
type page struct {
	Values []json.RawMessage `json:"values"`
	Next   string            `json:"next"`
}

// listPages follows `next` from first until it is absent or maxPages pages
// were read; it reports whether more pages were left unread. A `next` that
// was already visited is an error rather than an endless loop.
// appendDecoded is a listPages callback that decodes each value and appends it to out.
func appendDecoded[T any](out *[]T, decode func([]byte) (T, error)) func(json.RawMessage) error {
	return func(raw json.RawMessage) error {
		v, err := decode(raw)
		if err != nil {
			return err
		}
		*out = append(*out, v)
		return nil
	}
}

func (c *Client) listPages(ctx context.Context, endpoint string, first *url.URL, maxPages int, each func(json.RawMessage) error) (truncated bool, err error) {
	seen := map[string]bool{}
	u := first
	for pages := 0; ; pages++ {
		if pages == maxPages {
			return true, nil
		}
		key := u.String()
		if seen[key] {
			return false, fmt.Errorf("bitbucket GET %s: pagination loop: next page repeats an earlier one", endpoint)
		}
		seen[key] = true
		var p page
		if err := c.getJSON(ctx, endpoint, u, &p); err != nil {
			return false, err
		}
		for _, v := range p.Values {
			if err := each(v); err != nil {
				return false, fmt.Errorf("bitbucket GET %s: %w", endpoint, err)
			}
		}
		if p.Next == "" {
			return false, nil
		}
		if u, err = c.resolveNext(p.Next); err != nil {
			return false, fmt.Errorf("bitbucket GET %s: %w", endpoint, err)
		}
	}
}

// resolveNext turns a `next` link into a URL on our own base. A link to
// another host keeps its path and query but is sent to the configured host:
// credentials must never follow a link somewhere else, and a simulator behind
// a port-forward may not know the address it is reached at.
func (c *Client) resolveNext(next string) (*url.URL, error) {
	u, err := c.baseURL.Parse(next)
	if err != nil {
		return nil, fmt.Errorf("invalid next link: %w", err)
	}
	if u.Scheme != c.baseURL.Scheme || u.Host != c.baseURL.Host {
		c.log.V(1).Info("next link points to another host; following it on the configured base URL", "host", u.Host)
		rebased := *c.baseURL
		rebased.Path, rebased.RawPath, rebased.RawQuery = u.Path, u.RawPath, u.RawQuery
		u = &rebased
	}
	u.User, u.Fragment = nil, ""
	return u, nil
}

// apiURL builds base + "/" + segments, each segment percent-encoded on its
// own. Braced UUIDs therefore go out as %7B...%7D: braces are not allowed
// unescaped in a URI (RFC 3986), Go's url package escapes them anyway, and
// Bitbucket accepts both forms (its docs show %7B..%7D; the Atlassian
// autoscaler writes raw braces in its Python URL strings, but Python's
// requests percent-encodes them before sending). bbsim accepts both.
func (c *Client) apiURL(query url.Values, segments ...string) *url.URL {
	u := *c.baseURL
	path := strings.TrimRight(u.Path, "/")
	raw := strings.TrimRight(u.EscapedPath(), "/")
	for _, s := range segments {
		path += "/" + s
		raw += "/" + url.PathEscape(s)
	}
	u.Path, u.RawPath = path, raw
	u.RawQuery = ""
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	return &u
}
