package bbwebhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256(secret, raw body)>" when
// the webhook has a secret (bitbucket-api.md, section 5).
const SignatureHeader = "X-Hub-Signature"

// Reasons a signature is refused. None of them carries the header value: a
// near-miss signature in a log line would help whoever is guessing.
var (
	ErrNoSecret           = errors.New("no webhook secret configured to verify against")
	ErrMissingSignature   = errors.New("missing " + SignatureHeader + " header")
	ErrUnknownAlgorithm   = errors.New(SignatureHeader + " uses an unsupported algorithm (want sha256)")
	ErrMalformedSignature = errors.New(SignatureHeader + " is not valid hex of a SHA-256 digest")
	ErrSignatureMismatch  = errors.New(SignatureHeader + " does not match the body")
)

const signaturePrefix = "sha256="

// VerifySignature checks an X-Hub-Signature header against the HMAC-SHA256 of
// the raw body under secret, comparing in constant time. Any other algorithm
// prefix is refused rather than tried: accepting a weaker one would let an
// attacker pick it. An empty secret is an error, not a pass: callers that run
// without a secret skip verification explicitly.
func VerifySignature(secret []byte, body []byte, header string) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrMissingSignature
	}
	if len(header) < len(signaturePrefix) || !strings.EqualFold(header[:len(signaturePrefix)], signaturePrefix) {
		return ErrUnknownAlgorithm
	}
	got, err := hex.DecodeString(header[len(signaturePrefix):])
	if err != nil || len(got) != sha256.Size {
		return ErrMalformedSignature
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrSignatureMismatch
	}
	return nil
}

// Sign returns the X-Hub-Signature value Bitbucket sends for body, for tests
// and tools that act as the sender.
func Sign(secret []byte, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return signaturePrefix + hex.EncodeToString(mac.Sum(nil))
}
