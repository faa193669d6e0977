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
	key := func(c Credentials) string { return c.budgetKey(base) }
	tests := []struct {
		name string
		a, b Credentials
		same bool
	}{
		{"same oauth consumer", Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}, Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}, true},
		{"oauth wrong secret", Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}, Credentials{OAuthClientID: "id", OAuthClientSecret: "wrong"}, false},
		{"other consumer", Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}, Credentials{OAuthClientID: "id2", OAuthClientSecret: "s1"}, false},
		{"basic wrong password for someone's username", Credentials{Username: "alice", Password: "right"}, Credentials{Username: "alice", Password: "wrong"}, false},
		{"basic username case", Credentials{Username: "Alice", Password: "right"}, Credentials{Username: "alice", Password: "right"}, true},
		{"other token", Credentials{AccessToken: "t1"}, Credentials{AccessToken: "t2"}, false},
		{"field boundary", Credentials{Username: "ab", Password: "c"}, Credentials{Username: "a", Password: "bc"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := key(tt.a) == key(tt.b); got != tt.same {
				t.Errorf("same budget = %v, want %v", got, tt.same)
			}
		})
	}
	c := Credentials{OAuthClientID: "id", OAuthClientSecret: "s1"}
	if c.budgetKey(base) == c.budgetKey("http://127.0.0.1:9") {
		t.Error("two endpoints share a budget key")
	}
	token := key(Credentials{AccessToken: "tok-value"})
	if strings.Contains(token, "tok-value") || len(token) != 64 {
		t.Errorf("budget key is not an opaque hash: %q", token)
	}
}

// TestWrongPasswordCannotSpendAnothersBudget is the tenant case: a pool whose Secret names
// alice with a wrong password shares a registry with alice's pool, and spends nothing of hers.
func TestWrongPasswordCannotSpendAnothersBudget(t *testing.T) {
	reg := NewBudgetRegistry()
	newClient := func(c Credentials) *Client {
		t.Helper()
		cl, err := New(Config{BaseURL: "http://127.0.0.1:9", Credentials: c, HourlyLimit: 10, Budgets: reg})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	alice := newClient(Credentials{Username: "alice", Password: "right"})
	mallory := newClient(Credentials{Username: "ALICE", Password: "guess"})
	if alice.Budget() == mallory.Budget() {
		t.Fatal("a wrong password for alice's username draws on alice's budget")
	}
	for i := 0; i < 10; i++ {
		mallory.Budget().take(PriorityHigh, true)
	}
	if got := alice.Budget().Remaining(); got != 10 {
		t.Errorf("alice's budget after the other credential spent its own: %d left, want 10", got)
	}
}
