package metricsauth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestFilter(t *testing.T) {
	const (
		readerToken = "reader-token"
		otherToken  = "other-token"
	)
	users := map[string]string{readerToken: "system:serviceaccount:monitoring:prometheus", otherToken: "system:serviceaccount:team-a:builder"}
	tests := []struct {
		name          string
		authorization string
		method        string
		wantStatus    int
		wantReviews   int // TokenReviews and SubjectAccessReviews made
	}{
		{name: "no token", wantStatus: http.StatusUnauthorized},
		{name: "basic auth", authorization: "Basic dXNlcjpwYXNz", wantStatus: http.StatusUnauthorized},
		{name: "empty bearer", authorization: "Bearer ", wantStatus: http.StatusUnauthorized},
		{name: "unknown token", authorization: "Bearer forged", wantStatus: http.StatusUnauthorized, wantReviews: 1},
		{name: "authenticated, not granted", authorization: "Bearer " + otherToken, wantStatus: http.StatusForbidden, wantReviews: 2},
		{name: "granted", authorization: "Bearer " + readerToken, wantStatus: http.StatusOK, wantReviews: 2},
		{name: "granted, lower-case scheme", authorization: "bearer " + readerToken, wantStatus: http.StatusOK, wantReviews: 2},
		{name: "granted GET only", authorization: "Bearer " + readerToken, method: http.MethodPost, wantStatus: http.StatusForbidden, wantReviews: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientset := fake.NewClientset()
			reviews := 0
			clientset.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
				reviews++
				tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
				if user, ok := users[tr.Spec.Token]; ok {
					tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: user, Groups: []string{"system:serviceaccounts"}}}
				}
				return true, tr, nil
			})
			clientset.PrependReactor("create", "subjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
				reviews++
				sar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
				attrs := sar.Spec.NonResourceAttributes
				sar.Status.Allowed = sar.Spec.User == users[readerToken] && attrs != nil && attrs.Path == "/metrics" && attrs.Verb == "get"
				return true, sar, nil
			})
			handler, err := NewFilter(clientset)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("metrics"))
			}))
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			// Twice: the second answer must come from the cache.
			for range 2 {
				req := httptest.NewRequest(method, "/metrics", nil)
				if tt.authorization != "" {
					req.Header.Set("Authorization", tt.authorization)
				}
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != tt.wantStatus {
					t.Fatalf("status %d, want %d (%s)", rec.Code, tt.wantStatus, rec.Body.String())
				}
			}
			if reviews != tt.wantReviews {
				t.Errorf("%d reviews for two requests, want %d", reviews, tt.wantReviews)
			}
		})
	}
}

func TestCacheExpires(t *testing.T) {
	clientset := fake.NewClientset()
	reviews := 0
	clientset.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		reviews++
		return true, action.(k8stesting.CreateAction).GetObject(), nil
	})
	handler, _ := NewFilter(clientset)(logr.Discard(), http.NotFoundHandler())
	g := handler.(*guard)
	now := time.Unix(0, 0)
	g.now = func() time.Time { return now }
	serve := func() {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Authorization", "Bearer t")
		g.ServeHTTP(httptest.NewRecorder(), req)
	}
	serve()
	now = now.Add(denyTTL - time.Second)
	serve()
	now = now.Add(2 * time.Second)
	serve()
	if reviews != 2 {
		t.Errorf("%d TokenReviews, want 2 (one cached answer, one after it expired)", reviews)
	}
}

// TestFloodDoesNotEvictScrapers: a caller sending a new garbage token per request, many times
// the cache size, neither grows the cache nor makes the scraper's token be reviewed again.
func TestFloodDoesNotEvictScrapers(t *testing.T) {
	clientset := fake.NewClientset()
	reviews := map[string]int{}
	clientset.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		reviews[tr.Spec.Token]++
		if tr.Spec.Token == "scraper" {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "prometheus"}}
		}
		return true, tr, nil
	})
	clientset.PrependReactor("create", "subjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		sar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		sar.Status.Allowed = true
		return true, sar, nil
	})
	handler, _ := NewFilter(clientset)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	g := handler.(*guard)
	serve := func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := serve("scraper"); code != http.StatusOK {
		t.Fatalf("scraper: %d", code)
	}
	const flood = 20 * maxCached
	for i := range flood {
		if code := serve(fmt.Sprintf("garbage-%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("garbage token: %d", code)
		}
		if i%1000 == 0 && serve("scraper") != http.StatusOK {
			t.Fatal("scraper refused during the flood")
		}
	}
	if reviews["scraper"] != 1 {
		t.Errorf("the scraper's token was reviewed %d times during a flood of %d tokens, want once", reviews["scraper"], flood)
	}
	if n := g.denied.len(); n > maxUnauthenticated {
		t.Errorf("negative cache holds %d entries, bound %d", n, maxUnauthenticated)
	}
	if n := g.cache.len(); n != 1 {
		t.Errorf("authenticated cache holds %d entries, want 1", n)
	}
}

func TestBoundedCacheEvictsOneAtATime(t *testing.T) {
	now := time.Unix(1000, 0)
	c := boundedCache{max: 3, entries: map[[32]byte]decision{}}
	key := func(i byte) [32]byte { return [32]byte{i} }
	for i := byte(0); i < 3; i++ {
		c.put(key(i), decision{status: http.StatusOK, expires: now.Add(time.Duration(i+1) * time.Minute)}, now)
	}
	c.put(key(9), decision{status: http.StatusOK, expires: now.Add(time.Hour)}, now)
	if c.len() != 3 {
		t.Fatalf("len %d, want 3", c.len())
	}
	if _, ok := c.get(key(0), now); ok {
		t.Error("the entry closest to expiry was kept")
	}
	for _, i := range []byte{1, 2, 9} {
		if _, ok := c.get(key(i), now); !ok {
			t.Errorf("entry %d was evicted", i)
		}
	}
}
