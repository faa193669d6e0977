package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, cfg config)
	}{
		{
			name: "defaults give the demo workspace",
			check: func(t *testing.T, cfg config) {
				ws := cfg.opts.Workspaces[0]
				if ws.UUID != bbsim.DefaultWorkspaceUUID || ws.Repositories[0].UUID != bbsim.DefaultRepositoryUUID || cfg.listen != "127.0.0.1:8089" {
					t.Fatalf("defaults: %+v", cfg)
				}
			},
		},
		{
			name: "everything set",
			args: []string{
				"--listen", "localhost:0", "--oauth-client", "id:secret", "--workspace", "{w}", "--repository", "{r}=svc",
				"--hourly-limit", "50", "--retry-after", "3s", "--no-match", "fail", "--connect-delay", "0",
				"--error-rate", "0.1", "--error-codes", "503", "--latency", "5ms", "--drop-rate", "0.2",
				"--webhook", "http://127.0.0.1:9/hook,s3cret", "--basic-user", "bot:pw",
			},
			check: func(t *testing.T, cfg config) {
				o := cfg.opts
				if o.OAuthConsumers["id"] != "secret" || o.Workspaces[0].Repositories[0].Slug != "svc" || o.HourlyLimit != 50 ||
					o.RetryAfter != 3*time.Second || o.NoMatch != "fail" || o.ConnectDelay >= 0 || o.Faults.ErrorCodes[0] != 503 ||
					o.Faults.DropRate != 0.2 || o.Webhooks[0].Secret != "s3cret" || o.BasicUsers["bot"] != "pw" {
					t.Fatalf("options: %+v", o)
				}
			},
		},
		{name: "public listen address", args: []string{"--listen", "0.0.0.0:8089"}, wantErr: "loopback"},
		{name: "all interfaces", args: []string{"--listen", ":8089"}, wantErr: "loopback"},
		{name: "bad no-match", args: []string{"--no-match", "later"}, wantErr: "no-match"},
		{name: "bad oauth client", args: []string{"--oauth-client", "justid"}, wantErr: "KEY:VALUE"},
		{name: "4xx error code", args: []string{"--error-codes", "404"}, wantErr: "5xx"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out, banner := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--listen", "127.0.0.1:0"}, banner, io.Discard) }()

	first, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	url := strings.TrimSpace(strings.TrimPrefix(first, "bbsim listening on "))
	resp, err := http.Get(url + "/_sim/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
