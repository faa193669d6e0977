package bitbucket

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// Helpers for the tests that run the client against bbsim over real HTTP.

// seenRequest is what the recorder kept of one request and its answer.
type seenRequest struct {
	method, path, rawURI, userAgent string
	hadAuth                         bool
	status                          int
	at                              time.Time
}

// recorder sits in front of bbsim on the listener and records each request,
// so tests can count attempts and check what went over the wire.
type recorder struct {
	next http.Handler

	mu       sync.Mutex
	requests []seenRequest
	before   func(r *http.Request, n int) // n counts requests, from 1
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	n := len(rec.requests) + 1
	before := rec.before
	rec.requests = append(rec.requests, seenRequest{
		method: r.Method, path: r.URL.Path, rawURI: r.RequestURI, userAgent: r.UserAgent(),
		hadAuth: r.Header.Get("Authorization") != "", at: time.Now(),
	})
	rec.mu.Unlock()
	if before != nil {
		before(r, n)
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rec.next.ServeHTTP(sw, r)
	rec.mu.Lock()
	rec.requests[n-1].status = sw.status
	rec.mu.Unlock()
}

func (rec *recorder) setBefore(f func(r *http.Request, n int)) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.before = f
}

// count returns how many requests matched.
func (rec *recorder) count(match func(seenRequest) bool) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, r := range rec.requests {
		if match(r) {
			n++
		}
	}
	return n
}

func (rec *recorder) all() []seenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seenRequest(nil), rec.requests...)
}

func apiCalls(r seenRequest) bool   { return !strings.HasPrefix(r.path, "/site/oauth2/") }
func tokenCalls(r seenRequest) bool { return strings.HasPrefix(r.path, "/site/oauth2/") }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Hijack lets bbsim drop connections through the recorder.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.status = 0
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// logSink collects every log line, at every verbosity.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lines = append(s.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 10})
}

func (s *logSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

type simEnv struct {
	t    *testing.T
	sim  *bbsim.Server
	http *httptest.Server
	rec  *recorder
	logs *logSink
}

func newSimEnv(t *testing.T, opts bbsim.Options) *simEnv {
	t.Helper()
	sim := bbsim.New(opts)
	rec := &recorder{next: sim}
	srv := httptest.NewServer(rec)
	t.Cleanup(func() {
		srv.Close()
		sim.Close()
	})
	return &simEnv{t: t, sim: sim, http: srv, rec: rec, logs: &logSink{}}
}

// config is a client configuration for this simulator with the default OAuth
// consumer, test-sized backoffs and a private budget registry.
func (e *simEnv) config() Config {
	return Config{
		BaseURL:      e.http.URL,
		TokenURL:     e.http.URL + "/site/oauth2/access_token",
		Credentials:  Credentials{OAuthClientID: bbsim.DefaultClientID, OAuthClientSecret: bbsim.DefaultClientSecret},
		Timeout:      5 * time.Second,
		MinBackoff:   time.Millisecond,
		MaxBackoff:   10 * time.Millisecond,
		MaxRetryWait: 5 * time.Second,
		Budgets:      NewBudgetRegistry(),
		Logger:       e.logs.logger(),
		Version:      "test",
	}
}

func (e *simEnv) client(cfg Config) *Client {
	e.t.Helper()
	c, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return c
}

// assertNoSecrets fails if any secret appears in the captured logs or in text.
func (e *simEnv) assertNoSecrets(secrets []string, texts ...string) {
	e.t.Helper()
	all := append([]string{e.logs.text()}, texts...)
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, text := range all {
			if strings.Contains(text, secret) {
				e.t.Errorf("secret %.4s... leaked into %q", secret, truncate(text, 400))
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// currentToken is the OAuth access token the client holds, for leak checks.
func currentToken(c *Client) string {
	if src, ok := c.auth.(*oauthTokenSource); ok {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.token
	}
	return ""
}

var wsScope = Scope{Workspace: bbsim.DefaultWorkspaceUUID}

var defaultLabels = []string{"self.hosted", "linux"}

// eventually polls cond until it holds; the simulator's scheduler runs on
// its own goroutine, so state changes land shortly after the call.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustErr(t *testing.T, err error, is error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", is)
	}
	if !errors.Is(err, is) {
		t.Fatalf("error %v does not match %v", err, is)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
