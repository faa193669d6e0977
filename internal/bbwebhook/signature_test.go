package bbwebhook

import (
	"errors"
	"strings"
	"testing"
)

func TestVerifySignature(t *testing.T) {
	secret := []byte("hook-secret")
	body := []byte(commitStatusPayload)
	good := Sign(secret, body)
	hexPart := strings.TrimPrefix(good, "sha256=")

	tests := []struct {
		name    string
		secret  []byte
		body    []byte
		header  string
		wantErr error
	}{
		{name: "good signature", secret: secret, body: body, header: good},
		{name: "upper-case prefix and hex", secret: secret, body: body, header: "SHA256=" + strings.ToUpper(hexPart)},
		{name: "surrounding spaces", secret: secret, body: body, header: " " + good + " "},
		{name: "empty body signed", secret: secret, body: nil, header: Sign(secret, nil)},
		{name: "signed with another secret", secret: secret, body: body, header: Sign([]byte("other"), body), wantErr: ErrSignatureMismatch},
		{name: "body changed after signing", secret: secret, body: append([]byte(" "), body...), header: good, wantErr: ErrSignatureMismatch},
		{name: "missing header", secret: secret, body: body, header: "", wantErr: ErrMissingSignature},
		{name: "sha1 prefix", secret: secret, body: body, header: "sha1=" + hexPart[:40], wantErr: ErrUnknownAlgorithm},
		{name: "no prefix", secret: secret, body: body, header: hexPart, wantErr: ErrUnknownAlgorithm},
		{name: "sha512 prefix", secret: secret, body: body, header: "sha512=" + hexPart, wantErr: ErrUnknownAlgorithm},
		{name: "bad hex", secret: secret, body: body, header: "sha256=zz" + hexPart[2:], wantErr: ErrMalformedSignature},
		{name: "odd-length hex", secret: secret, body: body, header: good[:len(good)-1], wantErr: ErrMalformedSignature},
		{name: "short digest", secret: secret, body: body, header: "sha256=" + hexPart[:32], wantErr: ErrMalformedSignature},
		{name: "empty digest", secret: secret, body: body, header: "sha256=", wantErr: ErrMalformedSignature},
		{name: "no secret configured", secret: nil, body: body, header: good, wantErr: ErrNoSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySignature(tt.secret, tt.body, tt.header)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifySignature error %v, want %v", err, tt.wantErr)
			}
			if err != nil && tt.header != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.header)) {
				t.Errorf("error %q repeats the signature header", err)
			}
		})
	}
}
