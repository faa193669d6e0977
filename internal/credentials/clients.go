// Package credentials turns a RunnerPool's credentials Secret into a Bitbucket client: it reads
// and checks the Secret, refuses endpoints the operator does not trust, and keeps one client per
// API URL and credential so that the token cache and the request budget are shared by every pool
// using the same credential. It also names what is wrong with credentials, for the pool's
// CredentialsValid condition.
package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
)

// BitbucketAPI is what the reconcilers need from Bitbucket; *bitbucket.Client implements it.
type BitbucketAPI interface {
	runnerlist.Lister
	CreateRunner(ctx context.Context, s bitbucket.Scope, name string, labels []string) (*bitbucket.Runner, error)
	GetRunner(ctx context.Context, s bitbucket.Scope, uuid string) (*bitbucket.Runner, error)
	SetRunnerState(ctx context.Context, s bitbucket.Scope, uuid string, status bitbucket.RunnerStatus) error
	DeleteRunner(ctx context.Context, s bitbucket.Scope, uuid string) error
}

// Error says why a pool's credentials Secret cannot be used. Its message names the
// fix and never contains a credential.
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Reasons of the CredentialsValid condition.
const (
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonSecretInvalid       = "SecretInvalid"
	ReasonInvalidCredentials  = "InvalidCredentials"
	ReasonPermissionDenied    = "PermissionDenied"
	ReasonCredentialsAccepted = "CredentialsAccepted"
	ReasonEndpointNotAllowed  = "EndpointNotAllowed"
)

// Clients builds one Bitbucket client per API URL and credential and reuses it, so the token
// cache and the request budget are shared by every pool using the same credential.
type Clients struct {
	// Reader reads credentials Secrets. The manager gives its API reader: the cache holds only
	// the operator's own Secrets, not every Secret of the cluster.
	Reader client.Reader
	// New builds a client; tests may wrap it.
	New func(bitbucket.Config) (BitbucketAPI, error)
	// Metrics is shared by every client built.
	Metrics *bitbucket.Metrics
	// Budgets is the request budget registry of every client built; bitbucket.DefaultBudgets
	// when nil.
	Budgets *bitbucket.BudgetRegistry
	Logger  logr.Logger
	// DefaultAPIURL and DefaultTokenURL apply to pools that do not set their own.
	DefaultAPIURL, DefaultTokenURL string
	// AllowedHosts are the hosts a pool's own apiURL and tokenURL may name, besides those of
	// the defaults. Without this, anyone who can write a RunnerPool could send any Secret of
	// its namespace to a server of their choosing.
	AllowedHosts []string

	mu      sync.Mutex
	clients map[string]BitbucketAPI
	// byPool remembers the last client each pool used, so its runners can still be unregistered
	// when its Secret goes first (kubectl delete namespace deletes both at once).
	byPool map[types.UID]BitbucketAPI
	// secrets holds credentials Secrets read recently, so that every reconcile of every runner
	// does not read its pool's Secret from the API server.
	secrets map[types.NamespacedName]cachedSecret
	// credOf is the hash of the credential each pool last read (clientKey).
	credOf map[types.UID]string
	// proofs holds, per credential hash and scope, when an authenticated call with the
	// credential last succeeded on the scope (see Proved).
	proofs map[proof]time.Time
}

// proof is a credential proven on a scope: "runners <API> <workspace>[/<repository>]" for the
// runner list, "pipelines <API> <workspace>/<repository>" for a repository's step queue.
type proof struct{ credential, scope string }

// ProofTTL is how long a proof lets a credential share what others listed. After it, the
// credential lists once more with its own key (one request per credential and scope every
// ProofTTL), so access revoked in Bitbucket ends the sharing too.
const ProofTTL = 10 * time.Minute

type cachedSecret struct {
	at   time.Time
	data map[string][]byte
}

// credentialsSecretTTL bounds how long a rotated credential may go unnoticed.
const credentialsSecretTTL = 10 * time.Second

// Invalidate forgets the pool's credentials Secret, after Bitbucket rejected what it held, and
// every proof of the credential: it shares nothing until it works again.
func (c *Clients) Invalidate(pool *v1alpha1.RunnerPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.secrets, types.NamespacedName{Namespace: pool.Namespace, Name: pool.Spec.Bitbucket.CredentialsSecretRef.Name})
	if cred := c.credOf[pool.UID]; cred != "" {
		for p := range c.proofs {
			if p.credential == cred {
				delete(c.proofs, p)
			}
		}
		// Each wrong password typed into a Secret would otherwise leave a client behind.
		delete(c.clients, cred)
	}
}

// Forget drops what is kept for a deleted pool.
func (c *Clients) Forget(pool *v1alpha1.RunnerPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.credOf, pool.UID)
	delete(c.byPool, pool.UID)
}

// Credential is the hash of the credential the pool last read, "" before its first For.
func (c *Clients) Credential(pool *v1alpha1.RunnerPool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.credOf[pool.UID]
}

// Proven reports whether an authenticated call with the credential succeeded on the scope
// within ProofTTL.
func (c *Clients) Proven(credential, scope string) bool {
	if credential == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.proofs[proof{credential, scope}]
	return ok && time.Since(at) < ProofTTL
}

// Prove records that an authenticated call with the credential succeeded on the scope.
func (c *Clients) Prove(credential, scope string) {
	if credential == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proofs == nil {
		c.proofs = map[proof]time.Time{}
	}
	now := time.Now()
	for p, at := range c.proofs {
		if now.Sub(at) > 6*ProofTTL {
			delete(c.proofs, p) // credentials nobody uses any more
		}
	}
	c.proofs[proof{credential, scope}] = now
}

// PoolProven reports whether the pool's own credential has listed the pool's scope: only such
// a pool is given waiting steps (stepqueue) and may read what other credentials listed.
func (c *Clients) PoolProven(pool *v1alpha1.RunnerPool) bool {
	cred := c.Credential(pool)
	if cred == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Not bounded by ProofTTL: a proof that aged is renewed at the pool's next list, and a
	// credential Bitbucket rejects loses it at once (Invalidate).
	_, ok := c.proofs[proof{cred, listScope(c.sharedListKey(pool))}]
	return ok
}

func listScope(k runnerlist.Key) string { return "runners " + k.Shared().String() }

func (c *Clients) readSecret(ctx context.Context, key types.NamespacedName) (map[string][]byte, error) {
	c.mu.Lock()
	cached, ok := c.secrets[key]
	c.mu.Unlock()
	if ok && time.Since(cached.at) < credentialsSecretTTL {
		return cached.data, nil
	}
	var secret corev1.Secret
	if err := c.Reader.Get(ctx, key, &secret); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.secrets == nil {
		c.secrets = map[types.NamespacedName]cachedSecret{}
	}
	c.secrets[key] = cachedSecret{at: time.Now(), data: secret.Data}
	c.mu.Unlock()
	return secret.Data, nil
}

// ForCleanup is For, falling back to the pool's last working client when its credentials
// Secret is already gone.
func (c *Clients) ForCleanup(ctx context.Context, pool *v1alpha1.RunnerPool) (BitbucketAPI, error) {
	cl, err := c.For(ctx, pool)
	if err == nil {
		return cl, nil
	}
	c.mu.Lock()
	last, ok := c.byPool[pool.UID]
	c.mu.Unlock()
	if ok {
		return last, nil
	}
	return nil, err
}

// For returns the client for a pool, reading its credentials Secret.
func (c *Clients) For(ctx context.Context, pool *v1alpha1.RunnerPool) (BitbucketAPI, error) {
	for _, u := range []string{pool.Spec.Bitbucket.APIURL, pool.Spec.Bitbucket.TokenURL} {
		if err := c.checkEndpoint(u); err != nil {
			return nil, &Error{Reason: ReasonEndpointNotAllowed, Message: err.Error()}
		}
	}
	key := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Spec.Bitbucket.CredentialsSecretRef.Name}
	data, err := c.readSecret(ctx, key)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &Error{Reason: ReasonSecretNotFound, Message: fmt.Sprintf(
				"Secret %q not found in namespace %q: create it with keys %s and %s (OAuth consumer), or %s, or %s and %s",
				key.Name, key.Namespace, v1alpha1.SecretKeyClientID, v1alpha1.SecretKeyClientSecret,
				v1alpha1.SecretKeyAccessToken, v1alpha1.SecretKeyUsername, v1alpha1.SecretKeyPassword)}
		}
		return nil, fmt.Errorf("get credentials secret %s: %w", key, err)
	}
	creds := bitbucket.Credentials{
		OAuthClientID:     string(data[v1alpha1.SecretKeyClientID]),
		OAuthClientSecret: string(data[v1alpha1.SecretKeyClientSecret]),
		AccessToken:       string(data[v1alpha1.SecretKeyAccessToken]),
		Username:          string(data[v1alpha1.SecretKeyUsername]),
		Password:          string(data[v1alpha1.SecretKeyPassword]),
	}
	if err := creds.Validate(); err != nil {
		return nil, &Error{Reason: ReasonSecretInvalid, Message: fmt.Sprintf(
			"Secret %q: %v; it needs the keys %s and %s (OAuth consumer), or %s, or %s and %s",
			key.Name, err, v1alpha1.SecretKeyClientID, v1alpha1.SecretKeyClientSecret,
			v1alpha1.SecretKeyAccessToken, v1alpha1.SecretKeyUsername, v1alpha1.SecretKeyPassword)}
	}
	cfg := bitbucket.Config{
		BaseURL:     c.APIURL(pool),
		TokenURL:    c.TokenURL(pool),
		Credentials: creds,
		Logger:      c.Logger,
		Metrics:     c.Metrics,
		Budgets:     c.Budgets,
	}
	id := clientKey(cfg)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byPool == nil {
		c.byPool = map[types.UID]BitbucketAPI{}
		c.credOf = map[types.UID]string{}
	}
	c.credOf[pool.UID] = id
	if cl, ok := c.clients[id]; ok {
		c.byPool[pool.UID] = cl
		return cl, nil
	}
	newClient := c.New
	if newClient == nil {
		newClient = func(cfg bitbucket.Config) (BitbucketAPI, error) { return bitbucket.New(cfg) }
	}
	cl, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("bitbucket client for %s: %w", key, err)
	}
	if c.clients == nil {
		c.clients = map[string]BitbucketAPI{}
	}
	c.clients[id] = cl
	c.byPool[pool.UID] = cl
	return cl, nil
}

// checkEndpoint refuses a pool's own endpoint unless its host is one the operator was told to
// trust, and unless it uses https (plain http only on loopback, for simulators).
func (c *Clients) checkEndpoint(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("endpoint %q is not a URL", raw)
	}
	host := strings.ToLower(u.Hostname())
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
	}
	if u.Scheme != "https" && !loopback {
		return fmt.Errorf("endpoint %q must use https", raw)
	}
	allowed := append([]string{hostOf(c.DefaultAPIURL, bitbucket.DefaultBaseURL), hostOf(c.DefaultTokenURL, bitbucket.DefaultTokenURL)}, c.AllowedHosts...)
	for _, h := range allowed {
		if strings.EqualFold(strings.TrimSpace(h), host) {
			return nil
		}
	}
	return fmt.Errorf("endpoint host %q is not allowed: the operator only sends credentials to %s (its --bitbucket-api-url and --bitbucket-token-url hosts and --allowed-bitbucket-hosts)", host, strings.Join(allowed, ", "))
}

func hostOf(raw, fallback string) string {
	if raw == "" {
		raw = fallback
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// APIURL is the Bitbucket API the pool talks to.
func (c *Clients) APIURL(pool *v1alpha1.RunnerPool) string {
	if u := pool.Spec.Bitbucket.APIURL; u != "" {
		return strings.TrimSuffix(u, "/")
	}
	if c.DefaultAPIURL != "" {
		return strings.TrimSuffix(c.DefaultAPIURL, "/")
	}
	return bitbucket.DefaultBaseURL
}

// TokenURL is the OAuth token endpoint of the pool.
func (c *Clients) TokenURL(pool *v1alpha1.RunnerPool) string {
	if u := pool.Spec.Bitbucket.TokenURL; u != "" {
		return u
	}
	if c.DefaultTokenURL != "" {
		return c.DefaultTokenURL
	}
	return bitbucket.DefaultTokenURL
}

// ListKey is the key of the runner list the pool reads: the list its scope shares once the
// pool's credential has listed the scope itself within ProofTTL, its credential's own list
// until then. Call it after For, which reads the credential.
func (c *Clients) ListKey(pool *v1alpha1.RunnerPool) runnerlist.Key {
	k := c.sharedListKey(pool)
	cred := c.Credential(pool)
	if cred == "" {
		// For has not read the credential: a key no other pool has.
		cred = "pool " + string(pool.UID)
	}
	if !c.Proven(cred, listScope(k)) {
		k.Credential = cred
	}
	return k
}

// Listed records that the list of key k was read with its credential: the credential is proven
// on the scope.
func (c *Clients) Listed(k runnerlist.Key) {
	if k.Credential != "" {
		c.Prove(k.Credential, listScope(k))
	}
}

func (c *Clients) sharedListKey(pool *v1alpha1.RunnerPool) runnerlist.Key {
	return runnerlist.Key{APIURL: c.APIURL(pool), Scope: bitbucket.Scope{Workspace: string(pool.Spec.Bitbucket.Workspace), Repository: string(pool.Spec.Bitbucket.Repository)}}
}

// clientKey identifies a client by its endpoints and a hash of its credential, so the map never
// holds a readable secret as a key.
func clientKey(cfg bitbucket.Config) string {
	h := sha256.New()
	for _, s := range []string{cfg.BaseURL, cfg.TokenURL, cfg.Credentials.OAuthClientID, cfg.Credentials.OAuthClientSecret,
		cfg.Credentials.AccessToken, cfg.Credentials.Username, cfg.Credentials.Password} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Condition turns an error from reading credentials or calling Bitbucket into the
// reason and message of the CredentialsValid condition; ok is false when the error says
// nothing about the credentials.
func Condition(err error) (reason, message string, ok bool) {
	var ce *Error
	switch {
	case errors.As(err, &ce):
		return ce.Reason, ce.Message, true
	case bitbucket.IsUnauthorized(err):
		return ReasonInvalidCredentials, "Bitbucket rejected the credentials (401): check the OAuth consumer key and secret, the access token or the app password in the credentials Secret", true
	case bitbucket.IsForbidden(err):
		return ReasonPermissionDenied, "Bitbucket refused the request (403): the credentials need the runner:write scope (and pipeline for the Queue policy) on this workspace or repository", true
	}
	return "", "", false
}
