package bitbucket

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// AuthMode is the kind of credential a client authenticates with.
type AuthMode string

const (
	// AuthOAuth is an OAuth consumer used with the client-credentials grant;
	// Bitbucket counts its requests per consumer.
	AuthOAuth AuthMode = "oauth"
	// AuthAccessToken is a workspace, project or repository access token sent
	// as a Bearer token; counted per token.
	AuthAccessToken AuthMode = "access-token"
	// AuthBasic is a username (or Atlassian account email) with an app
	// password or API token; counted per user.
	AuthBasic AuthMode = "basic"
)

// Credentials holds exactly one of three ways to authenticate. The values are
// secrets: the type redacts itself when printed or logged.
type Credentials struct {
	OAuthClientID     string
	OAuthClientSecret string
	AccessToken       string
	Username          string
	Password          string
}

// Mode returns the auth mode the set fields select, or "" if none or several.
func (c Credentials) Mode() AuthMode {
	mode, _ := c.mode()
	return mode
}

// Validate says what is missing or conflicting. It names fields, never values.
func (c Credentials) Validate() error {
	_, err := c.mode()
	return err
}

func (c Credentials) mode() (AuthMode, error) {
	oauth := c.OAuthClientID != "" || c.OAuthClientSecret != ""
	token := c.AccessToken != ""
	basic := c.Username != "" || c.Password != ""
	var set []string
	if oauth {
		set = append(set, "OAuth client credentials")
	}
	if token {
		set = append(set, "access token")
	}
	if basic {
		set = append(set, "username/password")
	}
	switch {
	case len(set) == 0:
		return "", errors.New("bitbucket credentials: none set: need an OAuth client id and secret, an access token, or a username and app password/API token")
	case len(set) > 1:
		return "", fmt.Errorf("bitbucket credentials: exactly one auth mode must be set, found %s", strings.Join(set, " and "))
	}
	switch {
	case oauth && c.OAuthClientID == "":
		return "", errors.New("bitbucket credentials: OAuth client id is missing (the client secret is set)")
	case oauth && c.OAuthClientSecret == "":
		return "", errors.New("bitbucket credentials: OAuth client secret is missing (the client id is set)")
	case oauth:
		return AuthOAuth, nil
	case basic && c.Username == "":
		return "", errors.New("bitbucket credentials: username is missing (the password is set)")
	case basic && c.Password == "":
		return "", errors.New("bitbucket credentials: app password or API token is missing (the username is set)")
	case basic:
		return AuthBasic, nil
	}
	return AuthAccessToken, nil
}

// budgetKey identifies the request budget of a credential: a SHA-256 over
// the base URL, the mode and every field of the credential, secrets included.
// Bitbucket counts per consumer, token or user, so keying by the identity
// alone would be closer to its count; but then anyone who can write a Secret
// with someone else's username (or OAuth client id) and any password would
// spend, and be refused by, that user's budget without ever proving who they
// are. Keyed by the whole credential, a wrong password has a budget of its
// own, and two credentials of one user (an app password and an API token)
// are counted apart: the 429 handling (Budget.exhausted) corrects the count
// when Bitbucket's is higher. The base URL is part of the key because two
// Bitbucket endpoints (say, two simulators in one test binary) have separate
// quotas. Only the hash is kept, so no map key, Lease name or metric label
// holds a secret (docs/adr/0018-throttle-backoff-and-clamps.md).
func (c Credentials) budgetKey(baseURL string) string {
	fields := []string{strings.TrimRight(baseURL, "/"), string(c.Mode())}
	switch c.Mode() {
	case AuthOAuth:
		fields = append(fields, c.OAuthClientID, c.OAuthClientSecret)
	case AuthAccessToken:
		fields = append(fields, c.AccessToken)
	case AuthBasic:
		// Bitbucket accepts the username in any case; the secret is exact.
		fields = append(fields, strings.ToLower(c.Username), c.Password)
	}
	h := sha256.New()
	for _, f := range fields {
		// Length-prefixed, so no choice of values can make two different
		// credentials hash the same bytes.
		fmt.Fprintf(h, "%d:%s\x00", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// secrets lists the values that must never appear in an error or a log line.
func (c Credentials) secrets() []string {
	var out []string
	for _, s := range []string{c.OAuthClientSecret, c.AccessToken, c.Password} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// String keeps secrets out of fmt output ("%v", "%+v").
func (c Credentials) String() string {
	mode := c.Mode()
	if mode == "" {
		return "bitbucket.Credentials{invalid}"
	}
	return "bitbucket.Credentials{mode=" + string(mode) + ", values redacted}"
}

// GoString keeps secrets out of "%#v".
func (c Credentials) GoString() string { return c.String() }

// MarshalLog keeps secrets out of structured logs (logr.Marshaler).
func (c Credentials) MarshalLog() any { return c.String() }
