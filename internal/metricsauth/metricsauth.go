// Package metricsauth guards the manager's metrics endpoint as controller-runtime's
// pkg/metrics/filters does: a caller shows a bearer token, the API server says who it is
// (TokenReview) and whether it may GET the path (SubjectAccessReview on a non-resource URL).
// It is written against client-go alone because that filter package pulls k8s.io/apiserver
// into the module; the behaviour and the answers (401, 403, 500) are the same.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

const (
	// Decisions are cached so that a scrape every few seconds costs the API server two
	// reviews a minute, not two per scrape; a revoked grant is honoured within allowTTL.
	allowTTL = time.Minute
	denyTTL  = 10 * time.Second
	// maxCached bounds the cache of authenticated callers' decisions (200 and 403): only a
	// token the API server accepted gets in, so only holders of real tokens can fill it.
	maxCached = 1024
	// maxUnauthenticated bounds the separate cache of tokens the API server rejected. Anyone
	// who reaches the port can send a new garbage token per request: they churn this small
	// cache among themselves and never evict a scraper's decision
	// (docs/adr/0018-throttle-backoff-and-clamps.md).
	maxUnauthenticated = 256
	// reviewTimeout bounds one TokenReview or SubjectAccessReview.
	reviewTimeout = 10 * time.Second
)

// FilterProvider is a metricsserver.Options.FilterProvider.
func FilterProvider(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	clientset, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metrics authentication client: %w", err)
	}
	return NewFilter(clientset), nil
}

// NewFilter returns a filter that reviews callers with the API server behind clientset.
func NewFilter(clientset kubernetes.Interface) metricsserver.Filter {
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return &guard{clientset: clientset, next: next, log: log, now: time.Now,
			cache:  boundedCache{max: maxCached, entries: map[[32]byte]decision{}},
			denied: boundedCache{max: maxUnauthenticated, entries: map[[32]byte]decision{}},
		}, nil
	}
}

type decision struct {
	status  int    // http.StatusOK, StatusUnauthorized or StatusForbidden
	user    string // for the 403 message
	expires time.Time
}

type guard struct {
	clientset kubernetes.Interface
	next      http.Handler
	log       logr.Logger
	now       func() time.Time

	mu sync.Mutex
	// cache holds decisions for authenticated tokens, denied the 401s.
	cache, denied boundedCache
}

func (g *guard) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	token, ok := bearerToken(req)
	if !ok {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	verb := strings.ToLower(req.Method)
	// The key is a hash: the cache never holds a token.
	key := sha256.Sum256([]byte(verb + " " + req.URL.Path + " " + token))
	d, cached := g.lookup(key)
	if !cached {
		var err error
		d, err = g.review(req.Context(), token, verb, req.URL.Path)
		if err != nil {
			g.log.Error(err, "metrics request review failed", "path", req.URL.Path)
			http.Error(w, "Authentication or authorization failed", http.StatusInternalServerError)
			return
		}
		g.store(key, d)
	}
	switch d.status {
	case http.StatusOK:
		g.next.ServeHTTP(w, req)
	case http.StatusUnauthorized:
		g.log.V(4).Info("metrics request not authenticated", "path", req.URL.Path)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	default:
		g.log.V(4).Info("metrics request not authorized", "user", d.user, "path", req.URL.Path)
		http.Error(w, fmt.Sprintf("Authorization denied for user %s", d.user), http.StatusForbidden)
	}
}

func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (g *guard) review(ctx context.Context, token, verb, path string) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	tr, err := g.clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return decision{}, fmt.Errorf("create TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		return decision{status: http.StatusUnauthorized, expires: g.now().Add(denyTTL)}, nil
	}
	user := tr.Status.User
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := g.clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:                  user.Username,
			UID:                   user.UID,
			Groups:                user.Groups,
			Extra:                 extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return decision{}, fmt.Errorf("create SubjectAccessReview for %s: %w", user.Username, err)
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		return decision{status: http.StatusForbidden, user: user.Username, expires: g.now().Add(denyTTL)}, nil
	}
	return decision{status: http.StatusOK, user: user.Username, expires: g.now().Add(allowTTL)}, nil
}

func (g *guard) lookup(key [32]byte) (decision, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if d, ok := g.cache.get(key, now); ok {
		return d, true
	}
	return g.denied.get(key, now)
}

func (g *guard) store(key [32]byte, d decision) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d.status == http.StatusUnauthorized {
		g.denied.put(key, d, g.now())
		return
	}
	g.cache.put(key, d, g.now())
}

// boundedCache holds at most max decisions. When full it drops the expired ones and, if
// that is not enough, the one closest to expiry: never everything at once, so a burst of
// new entries costs the others at most their own number of places.
type boundedCache struct {
	max     int
	entries map[[32]byte]decision
}

func (c *boundedCache) get(key [32]byte, now time.Time) (decision, bool) {
	d, ok := c.entries[key]
	if !ok || !now.Before(d.expires) {
		return decision{}, false
	}
	return d, true
}

func (c *boundedCache) put(key [32]byte, d decision, now time.Time) {
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		var oldest [32]byte
		var oldestExp time.Time
		for k, v := range c.entries {
			if !now.Before(v.expires) {
				delete(c.entries, k)
				continue
			}
			if oldestExp.IsZero() || v.expires.Before(oldestExp) {
				oldest, oldestExp = k, v.expires
			}
		}
		if len(c.entries) >= c.max {
			delete(c.entries, oldest)
		}
	}
	c.entries[key] = d
}

func (c *boundedCache) len() int { return len(c.entries) }
