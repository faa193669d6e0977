package bbsim

import (
	"crypto/subtle"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scopes granted to every OAuth consumer: what the operator needs
// (runner:write to manage runners, pipeline and repository to read the queue).
const grantedScopes = "account pipeline repository runner runner:write"

type issuedToken struct {
	consumer string
	expires  time.Time
	refresh  bool   // a refresh token, not an access token
	runner   string // the runner whose own client was granted the token (agent API only)
}

// credential identifies who is calling. key never contains a secret: it is
// what rate limits, call counts and logs are keyed by.
type credential struct {
	key         string
	readOnly    bool
	accessToken bool
}

// tokenResponse is the client-credentials grant answer of
// /site/oauth2/access_token.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scopes       string `json:"scopes"`
	RefreshToken string `json:"refresh_token"`
	State        string `json:"state"`
}

func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "Malformed token request")
		return
	}
	clientID, secret, ok := r.BasicAuth()
	if !ok {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	want, known := s.opts.OAuthConsumers[clientID]
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID == "" || !known || !equalSecret(want, secret) {
		s.tokenRequests["rejected"]++
		writeError(w, http.StatusUnauthorized, "Invalid OAuth client credentials")
		return
	}
	s.tokenRequests[clientID]++
	switch grant := r.PostForm.Get("grant_type"); grant {
	case "client_credentials":
	case "refresh_token":
		old, found := s.tokens[r.PostForm.Get("refresh_token")]
		if !found || !old.refresh || old.consumer != clientID {
			writeError(w, http.StatusBadRequest, "Invalid refresh_token")
			return
		}
	default:
		writeErrorDetail(w, http.StatusBadRequest, "Unsupported grant type", fmt.Sprintf("grant_type %q is not supported", grant))
		return
	}
	access, refresh := randomToken(24), randomToken(16)
	s.tokens[access] = &issuedToken{consumer: clientID, expires: s.now().Add(s.opts.TokenTTL)}
	s.tokens[refresh] = &issuedToken{consumer: clientID, refresh: true}
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken:  access,
		TokenType:    "bearer",
		ExpiresIn:    int(s.opts.TokenTTL / time.Second),
		Scopes:       grantedScopes,
		RefreshToken: refresh,
		State:        "client_credentials",
	})
}

// authenticate maps the Authorization header to a credential, or returns the
// 401 message Bitbucket would send. Callers hold s.mu.
func (s *Server) authenticateLocked(r *http.Request) (credential, string) {
	header := r.Header.Get("Authorization")
	if header == "" {
		return credential{}, "Authentication required"
	}
	if user, password, ok := r.BasicAuth(); ok {
		want, known := s.opts.BasicUsers[user]
		if !known || !equalSecret(want, password) {
			return credential{}, "Invalid username or app password"
		}
		return credential{key: "basic:" + user}, ""
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return credential{}, "Unsupported authentication scheme"
	}
	if issued, found := s.tokens[token]; found && !issued.refresh {
		if !s.now().Before(issued.expires) {
			return credential{}, "Access token expired."
		}
		return credential{key: "oauth:" + issued.consumer}, ""
	}
	for i, t := range s.opts.AccessTokens {
		if equalSecret(t, token) {
			return credential{key: fmt.Sprintf("access-token:#%d", i+1), accessToken: true}, ""
		}
	}
	for i, t := range s.opts.ReadOnlyTokens {
		if equalSecret(t, token) {
			return credential{key: fmt.Sprintf("read-only-token:#%d", i+1), accessToken: true, readOnly: true}, ""
		}
	}
	return credential{}, "Token is invalid, expired, or not supported for this endpoint."
}

func equalSecret(want, got string) bool {
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// api wraps a Bitbucket API handler with what every API call goes through:
// authentication, the per-credential hourly budget, write permission, and
// call accounting for the admin state.
func (s *Server) api(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endpoint := endpointName(r)
		s.mu.Lock()
		cred, authErr := s.authenticateLocked(r)
		if authErr != "" {
			s.countCallLocked("unauthenticated", endpoint)
			s.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer realm="api.bitbucket.org"`)
			writeError(w, http.StatusUnauthorized, authErr)
			return
		}
		s.countCallLocked(cred.key, endpoint)
		if s.throttled[cred.key] {
			s.rateLimitHits[cred.key]++
			s.mu.Unlock()
			s.writeRateLimited(w, 0)
			return
		}
		allowed, used := s.limiter.allow(cred.key, s.now(), s.hourlyLimit)
		if !allowed {
			s.rateLimitHits[cred.key]++
		}
		limit := s.hourlyLimit
		s.mu.Unlock()

		if cred.accessToken && limit > 0 {
			// Bitbucket sends these only for access-token requests on scaled endpoints.
			w.Header().Set("X-RateLimit-Limit", strconv.Itoa(limit))
			w.Header().Set("X-RateLimit-Resource", "api")
			w.Header().Set("X-RateLimit-NearLimit", strconv.FormatBool(float64(limit-used) < 0.2*float64(limit)))
		}
		if !allowed {
			s.writeRateLimited(w, s.opts.RetryAfter)
			return
		}
		if isWrite(r.Method) && cred.readOnly {
			writeErrorDetail(w, http.StatusForbidden, "Your credentials lack one or more required privilege scopes.", "required scope: runner:write")
			return
		}
		h(w, r)
	})
}

func (s *Server) writeRateLimited(w http.ResponseWriter, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", formatSeconds(retryAfter))
	}
	writeError(w, http.StatusTooManyRequests, "Rate limit for this resource has been exceeded.")
}

// formatSeconds renders a Retry-After value: whole seconds, rounded up, at least 1.
func formatSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// endpointName is the route pattern, e.g. "GET /2.0/repositories/{ws}/{repo}/pipelines",
// so that call counts group requests the way a reader thinks of endpoints.
func endpointName(r *http.Request) string {
	name := r.Pattern
	if name == "" {
		name = r.Method + " " + r.URL.Path
	}
	return strings.TrimSuffix(name, "/{$}")
}

func (s *Server) countCallLocked(credKey, endpoint string) {
	s.calls[endpoint]++
	byEndpoint := s.callsByCred[credKey]
	if byEndpoint == nil {
		byEndpoint = map[string]int{}
		s.callsByCred[credKey] = byEndpoint
	}
	byEndpoint[endpoint]++
}
