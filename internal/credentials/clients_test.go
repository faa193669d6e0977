package credentials

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func TestCredentialsCondition(t *testing.T) {
	missing := &Error{Reason: ReasonSecretNotFound, Message: "Secret \"bitbucket\" not found in namespace \"ci\""}
	tests := []struct {
		name       string
		err        error
		wantReason string
		wantOK     bool
	}{
		{"a missing Secret is reported with its own reason", missing, ReasonSecretNotFound, true},
		{"a credentials error wrapped with context is still recognised", fmt.Errorf("bitbucket client: %w", missing), ReasonSecretNotFound, true},
		{"a 401 means Bitbucket rejected the credentials", &bitbucket.APIError{StatusCode: 401, Endpoint: "runners.list"}, ReasonInvalidCredentials, true},
		{"a refused token grant behind context means the same", fmt.Errorf("list runners: %w", &bitbucket.APIError{StatusCode: 401, Endpoint: "oauth.token"}), ReasonInvalidCredentials, true},
		{"a 403 means the credentials lack a scope", &bitbucket.APIError{StatusCode: 403, Endpoint: "runners.create"}, ReasonPermissionDenied, true},
		{"a server error says nothing about the credentials", &bitbucket.APIError{StatusCode: 500, Endpoint: "runners.list"}, "", false},
		{"a rate limit says nothing about the credentials", &bitbucket.APIError{StatusCode: 429, Endpoint: "runners.list"}, "", false},
		{"a network error says nothing about the credentials", errors.New("dial tcp 127.0.0.1:1: connection refused"), "", false},
		{"no error says nothing", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, message, ok := Condition(tt.err)
			if reason != tt.wantReason || ok != tt.wantOK {
				t.Errorf("Condition = %q, %t; want %q, %t", reason, ok, tt.wantReason, tt.wantOK)
			}
			if ok && message == "" {
				t.Error("a credentials problem comes without a message telling the fix")
			}
		})
	}
}

func TestClientKey(t *testing.T) {
	base := bitbucket.Config{
		BaseURL:  "http://127.0.0.1:8080",
		TokenURL: "http://127.0.0.1:8080/site/oauth2/access_token",
		Credentials: bitbucket.Credentials{
			OAuthClientID: "consumer-key-4f1c", OAuthClientSecret: "consumer-secret-9a7e",
			AccessToken: "access-token-b52d", Username: "ci-bot", Password: "app-password-63e0",
		},
	}
	variants := map[string]func(*bitbucket.Config){
		"base":          func(*bitbucket.Config) {},
		"api url":       func(c *bitbucket.Config) { c.BaseURL = "http://127.0.0.1:9090" },
		"token url":     func(c *bitbucket.Config) { c.TokenURL = "http://127.0.0.1:9090/token" },
		"client id":     func(c *bitbucket.Config) { c.Credentials.OAuthClientID = "other-key" },
		"client secret": func(c *bitbucket.Config) { c.Credentials.OAuthClientSecret = "other-secret" },
		"access token":  func(c *bitbucket.Config) { c.Credentials.AccessToken = "other-token" },
		"username":      func(c *bitbucket.Config) { c.Credentials.Username = "other-bot" },
		"password":      func(c *bitbucket.Config) { c.Credentials.Password = "other-password" },
		"shifted fields": func(c *bitbucket.Config) {
			c.Credentials.Username, c.Credentials.Password = "ci-botapp", "-password-63e0"
		},
	}

	t.Run("the same endpoints and credentials share one client", func(t *testing.T) {
		other := base
		if clientKey(base) != clientKey(other) {
			t.Error("equal configs got different keys")
		}
	})

	t.Run("a different endpoint or credential gets its own client", func(t *testing.T) {
		seen := map[string]string{}
		for name, change := range variants {
			cfg := base
			change(&cfg)
			key := clientKey(cfg)
			if prev, dup := seen[key]; dup {
				t.Errorf("%s and %s share the key %s", name, prev, key)
			}
			seen[key] = name
		}
	})

	t.Run("the key never holds a credential", func(t *testing.T) {
		key := clientKey(base)
		c := base.Credentials
		for _, secret := range []string{c.OAuthClientID, c.OAuthClientSecret, c.AccessToken, c.Username, c.Password} {
			if strings.Contains(key, secret) {
				t.Errorf("key %q contains %q", key, secret)
			}
		}
		if len(key) != 64 || strings.Trim(key, "0123456789abcdef") != "" {
			t.Errorf("key %q is not a hex SHA-256", key)
		}
	})
}

func TestAPoolMaySendCredentialsOnlyToHostsTheOperatorTrusts(t *testing.T) {
	c := &Clients{DefaultAPIURL: "http://127.0.0.1:8089", AllowedHosts: []string{"bitbucket.example.com"}}
	tests := []struct {
		url     string
		allowed bool
	}{
		{"", true},
		{"https://api.bitbucket.org", false}, // not the configured API host, nor allowed
		{"https://bitbucket.org/site/oauth2/access_token", true},
		{"http://127.0.0.1:8089", true},
		{"https://bitbucket.example.com/api", true},
		{"https://BITBUCKET.example.com", true},
		{"http://bitbucket.example.com", false}, // plain http off loopback
		{"https://attacker.example.net", false},
		{"https://api.bitbucket.org.attacker.net", false},
		{"not a url", false},
	}
	for _, tt := range tests {
		err := c.checkEndpoint(tt.url)
		if (err == nil) != tt.allowed {
			t.Errorf("checkEndpoint(%q) = %v, want allowed=%t", tt.url, err, tt.allowed)
		}
	}
}
