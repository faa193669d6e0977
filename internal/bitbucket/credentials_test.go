package bitbucket

import (
	"strings"
	"testing"
)

func TestCredentialsValidate(t *testing.T) {
	tests := []struct {
		name     string
		creds    Credentials
		wantMode AuthMode
		wantErr  string
	}{
		{"oauth", Credentials{OAuthClientID: "id", OAuthClientSecret: "sec-value"}, AuthOAuth, ""},
		{"token", Credentials{AccessToken: "tok-value"}, AuthAccessToken, ""},
		{"basic", Credentials{Username: "me", Password: "pw-value"}, AuthBasic, ""},
		{"none", Credentials{}, "", "none set"},
		{"oauth without secret", Credentials{OAuthClientID: "id"}, "", "OAuth client secret is missing"},
		{"oauth without id", Credentials{OAuthClientSecret: "sec-value"}, "", "OAuth client id is missing"},
		{"basic without password", Credentials{Username: "me"}, "", "app password or API token is missing"},
		{"basic without user", Credentials{Password: "pw-value"}, "", "username is missing"},
		{"two modes", Credentials{AccessToken: "tok-value", Username: "me", Password: "pw-value"}, "", "exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.creds.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
				}
				for _, secret := range []string{"sec-value", "tok-value", "pw-value"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error echoes a secret: %v", err)
					}
				}
			}
			if got := tt.creds.Mode(); got != tt.wantMode {
				t.Errorf("Mode = %q, want %q", got, tt.wantMode)
			}
		})
	}
}

func TestBudgetKey(t *testing.T) {
	base := "https://api.bitbucket.org"
	a := Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}.budgetKey(base)
	rotated := Credentials{OAuthClientID: "id", OAuthClientSecret: "s2"}.budgetKey(base)
	other := Credentials{OAuthClientID: "id2", OAuthClientSecret: "s1"}.budgetKey(base)
	elsewhere := Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}.budgetKey("http://127.0.0.1:9")
	token := Credentials{AccessToken: "tok-value"}.budgetKey(base)
	if a != rotated {
		t.Error("a rotated consumer secret changed the budget: Bitbucket counts per consumer")
	}
	if a == other || a == elsewhere {
		t.Error("different consumers or endpoints share a budget key")
	}
	if strings.Contains(token, "tok-value") || len(token) != 64 {
		t.Errorf("budget key is not an opaque hash: %q", token)
	}
}
