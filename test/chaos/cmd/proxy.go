package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// proxy stands between the operator and bbsim, in the same process. It counts every answer the
// operator got (bbsim's own counters skip the ones its fault injector gave), learns every
// credential Bitbucket handed out (access tokens, runner OAuth secrets) so the output can be
// searched for them, and, during the expired-token fault, tells the operator that tokens live
// two hours while bbsim expires them after tokenTTL.
type proxy struct {
	next    http.Handler
	secrets *secretSet

	stretchTokens atomic.Bool

	mu       sync.Mutex
	requests int
	byStatus map[string]int
	dropped  int
	tokens   int
}

func newProxy(next http.Handler, secrets *secretSet) *proxy {
	return &proxy{next: next, secrets: secrets, byStatus: map[string]int{}}
}

// proxyCounts is what the operator experienced from Bitbucket.
type proxyCounts struct {
	Requests, OK, Unauthorized, TooMany, ServerErrors, OtherErrors, Dropped, TokenGrants int
}

func (p *proxy) counts() proxyCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := proxyCounts{Requests: p.requests, Dropped: p.dropped, TokenGrants: p.tokens}
	for class, n := range p.byStatus {
		switch class {
		case "2xx":
			c.OK += n
		case "401":
			c.Unauthorized += n
		case "429":
			c.TooMany += n
		case "5xx":
			c.ServerErrors += n
		default:
			c.OtherErrors += n
		}
	}
	return c
}

func isTokenPath(path string) bool { return path == "/site/oauth2/access_token" }

func isRunnerCreate(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/pipelines-config/runners")
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	capture := r.Method == http.MethodPost && (isTokenPath(r.URL.Path) || isRunnerCreate(r))
	if capture {
		rec.buf = &bytes.Buffer{}
	}
	p.next.ServeHTTP(rec, r)

	p.mu.Lock()
	p.requests++
	if rec.hijacked {
		p.dropped++
		p.mu.Unlock()
		return
	}
	p.byStatus[statusClass(rec.code)]++
	if capture && isTokenPath(r.URL.Path) && rec.code/100 == 2 {
		p.tokens++
	}
	p.mu.Unlock()

	if !capture {
		return
	}
	body := rec.buf.Bytes()
	if rec.code/100 == 2 {
		body = p.learn(r, body)
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.code)
	_, _ = w.Write(body)
}

// learn records the credentials in a token grant or a runner creation, and stretches a token's
// announced lifetime while the expired-token fault is on.
func (p *proxy) learn(r *http.Request, body []byte) []byte {
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return body
	}
	if isTokenPath(r.URL.Path) {
		for _, key := range []string{"access_token", "refresh_token"} {
			if v, ok := doc[key].(string); ok {
				p.secrets.add(v, "access token")
			}
		}
		if p.stretchTokens.Load() {
			doc["expires_in"] = 7200
			if out, err := json.Marshal(doc); err == nil {
				return out
			}
		}
		return body
	}
	if oc, ok := doc["oauth_client"].(map[string]any); ok {
		if v, ok := oc["secret"].(string); ok {
			p.secrets.add(v, "runner OAuth secret")
		}
	}
	return body
}

func statusClass(code int) string {
	switch {
	case code/100 == 2:
		return "2xx"
	case code == http.StatusUnauthorized, code == http.StatusTooManyRequests:
		return strconv.Itoa(code)
	case code/100 == 5:
		return "5xx"
	}
	return "4xx"
}

// recorder keeps the status of an answer, buffers the body of the answers the proxy reads, and
// lets bbsim hijack the connection to drop it.
type recorder struct {
	http.ResponseWriter
	code     int
	wrote    bool
	buf      *bytes.Buffer
	hijacked bool
}

func (rec *recorder) WriteHeader(code int) {
	if rec.wrote {
		return
	}
	rec.code, rec.wrote = code, true
	if rec.buf == nil {
		rec.ResponseWriter.WriteHeader(code)
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.buf != nil {
		return rec.buf.Write(b)
	}
	return rec.ResponseWriter.Write(b)
}

func (rec *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := rec.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	rec.hijacked = true
	return hj.Hijack()
}

// secretSet holds every secret value handed to the operator, with what it is.
type secretSet struct {
	mu     sync.Mutex
	values map[string]string
}

func newSecretSet() *secretSet { return &secretSet{values: map[string]string{}} }

func (s *secretSet) add(value, kind string) {
	if len(value) < minSecretLength {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[value]; !ok {
		s.values[value] = kind
	}
}

func (s *secretSet) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.values))
	for k, v := range s.values {
		out[k] = v
	}
	return out
}
