package bbwebhook

import (
	"strings"
	"testing"
)

func FuzzParseEvent(f *testing.F) {
	f.Add(EventCommitStatusCreated, []byte(commitStatusPayload))
	f.Add(EventPush, []byte(pushPayload))
	f.Add(EventCommitStatusUpdated, []byte(`{"repository":{"uuid":"{r}"},"commit_status":{"state":"failed"}}`))
	f.Add("repo:fork", []byte(`{"repository":{"full_name":"/"}}`))
	f.Add(EventPush, []byte(`{"repository":null}`))
	f.Add(EventPush, []byte(`{"repository":{"workspace":{"slug":1}}}`))
	f.Add("", []byte(`null`))
	f.Add(EventPush, []byte{0xff, '{'})
	f.Fuzz(func(t *testing.T, key string, body []byte) {
		ev, err := ParseEvent(key, body)
		if err != nil {
			if ev != (Event{}) {
				t.Fatalf("error %v with non-zero event %+v", err, ev)
			}
			return
		}
		if ev.Key != key {
			t.Fatalf("Key %q, want %q", ev.Key, key)
		}
		if ev.RepositoryUUID == "" && ev.RepositoryFullName == "" {
			t.Fatalf("accepted a payload with no repository: %+v", ev)
		}
		if ev.RequestUUID != "" {
			t.Fatalf("RequestUUID %q comes from a header, not the body", ev.RequestUUID)
		}
		if ev.CommitStatusState != "" && key != EventCommitStatusCreated && key != EventCommitStatusUpdated {
			t.Fatalf("state %q set for event %q", ev.CommitStatusState, key)
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	secret := []byte("hook-secret")
	body := []byte(commitStatusPayload)
	f.Add(secret, body, Sign(secret, body))
	f.Add(secret, body, "sha1=00")
	f.Add(secret, body, "sha256=not-hex")
	f.Add(secret, body, "")
	f.Add([]byte{}, body, Sign(nil, body))
	f.Add([]byte{0}, []byte{}, "sha256="+strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		err := VerifySignature(secret, body, header)
		if len(secret) == 0 {
			if err == nil {
				t.Fatal("verified without a secret")
			}
			return
		}
		want := Sign(secret, body)
		if err == nil && !strings.EqualFold(strings.TrimSpace(header), want) {
			t.Fatalf("accepted header %q, the signature is %q", header, want)
		}
		if err := VerifySignature(secret, body, want); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
	})
}
