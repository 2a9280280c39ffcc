// Package adapterstest signs requests the way each webhook provider does, for
// tests of the adapters and of the binary.
package adapterstest

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"testing"
	"time"
)

// HexHMAC256 returns the hex HMAC-SHA256 of the concatenated parts.
func HexHMAC256(secret string, parts ...string) string {
	m := hmac.New(sha256.New, []byte(secret))
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// GitHubSignature256 is the X-Hub-Signature-256 value GitHub sends for body.
func GitHubSignature256(secret, body string) string {
	return "sha256=" + HexHMAC256(secret, body)
}

// GitHubSignatureSHA1 is the legacy X-Hub-Signature value for body.
func GitHubSignatureSHA1(secret, body string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(body))
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

// BitbucketSignature is the X-Hub-Signature value Bitbucket sends for body.
func BitbucketSignature(secret, body string) string { return "sha256=" + HexHMAC256(secret, body) }

// SlackSignature is the X-Slack-Signature value for body sent at ts (unix
// seconds).
func SlackSignature(secret string, ts int64, body string) string {
	return "v0=" + HexHMAC256(secret, "v0:", strconv.FormatInt(ts, 10), ":", body)
}

// StripeV1 is a v1 digest of a Stripe-Signature header for body sent at t.
func StripeV1(secret string, t int64, body string) string {
	return HexHMAC256(secret, strconv.FormatInt(t, 10), ".", body)
}

// StripeSignature is a Stripe-Signature header with one v1 digest.
func StripeSignature(secret string, t time.Time, body string) string {
	return "t=" + strconv.FormatInt(t.Unix(), 10) + ",v1=" + StripeV1(secret, t.Unix(), body)
}

// ReadFile returns a testdata file's content, failing the test if it cannot.
func ReadFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
