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

// budgetKey identifies the quota Bitbucket charges a request to: the OAuth
// consumer, the access token, or the user (an app password and an API token of
// the same user share one quota). The base URL is part of the key because two
// Bitbucket endpoints (say, two simulators in one test binary) have separate
// quotas. Only a hash is kept, so no map key or metric label holds a secret.
func (c Credentials) budgetKey(baseURL string) string {
	var identity string
	switch c.Mode() {
	case AuthOAuth:
		identity = c.OAuthClientID
	case AuthAccessToken:
		identity = c.AccessToken
	case AuthBasic:
		identity = strings.ToLower(c.Username)
	}
	sum := sha256.Sum256([]byte(strings.TrimRight(baseURL, "/") + "\x00" + string(c.Mode()) + "\x00" + identity))
	return hex.EncodeToString(sum[:])
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
