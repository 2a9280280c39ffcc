package config

import (
	"fmt"
	"log/slog"
	"time"
)

// Names of the EventSource provider blocks this release implements: each is
// served at POST /webhooks/{namespace}/{name}.
const (
	ProviderWebhook   = "webhook"
	ProviderGitHub    = "github"
	ProviderGitLab    = "gitlab"
	ProviderBitbucket = "bitbucket"
	ProviderSlack     = "slack"
	ProviderStripe    = "stripe"
)

// Defaults of EventSource fields, applied by the loader.
const (
	// DefaultMaxPayloadSize is an EventSource's spec.maxPayloadSize when unset.
	DefaultMaxPayloadSize = 1 << 20
	// MaxMaxPayloadSize bounds spec.maxPayloadSize: a request body is held in
	// memory while it is verified.
	MaxMaxPayloadSize = 64 << 20
	// DefaultDedupeWindow is spec.dedupeWindow when unset.
	DefaultDedupeWindow = "PT1H"
	// DefaultSignatureTolerance is how far a Slack or Stripe signature's
	// timestamp may be from the current time when tolerance is unset.
	DefaultSignatureTolerance = "PT5M"
)

// EventSource is a signalbox EventSource: something outside that produces
// events, normalised into CloudEvents and published to a broker. Exactly one
// provider block of its spec is set; see Provider.
type EventSource struct {
	Origin     Origin          `json:"-"`
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       EventSourceSpec `json:"spec"`
}

// Namespace returns the source's namespace ("default" when unset).
func (s EventSource) Namespace() string { return namespaceOr(s.Metadata.Namespace) }

// Name returns the source's name.
func (s EventSource) Name() string { return s.Metadata.Name }

// Provider returns the name of the provider block that is set (one of the
// Provider constants), or "" when none is.
func (s EventSource) Provider() string {
	sp := &s.Spec
	switch {
	case sp.Webhook != nil:
		return ProviderWebhook
	case sp.GitHub != nil:
		return ProviderGitHub
	case sp.GitLab != nil:
		return ProviderGitLab
	case sp.Bitbucket != nil:
		return ProviderBitbucket
	case sp.Slack != nil:
		return ProviderSlack
	case sp.Stripe != nil:
		return ProviderStripe
	}
	return ""
}

// EventSourceSpec is the body of an EventSource.
type EventSourceSpec struct {
	// Broker names the broker, in the source's namespace, that receives the
	// events. Defaults to "default".
	Broker string `json:"broker"`
	// MaxPayloadSize is the largest request body accepted, in bytes; larger
	// requests get 413. Zero means DefaultMaxPayloadSize; at most
	// MaxMaxPayloadSize.
	MaxPayloadSize int64 `json:"maxPayloadSize,omitempty"`
	// Filter is a CEL expression over the produced event (`event`, `data`,
	// as in a Sensor); events it does not match are answered 2xx and
	// dropped. Empty keeps every event.
	Filter string `json:"filter,omitempty"`
	// DedupeWindow is how long a delivery id is remembered so that a
	// provider's retry of a delivery already stored is answered 2xx without
	// storing it again (ISO-8601; default DefaultDedupeWindow; PT0S turns it
	// off).
	DedupeWindow string `json:"dedupeWindow,omitempty"`

	Webhook   *WebhookSource   `json:"webhook,omitempty"`
	GitHub    *GitHubSource    `json:"github,omitempty"`
	GitLab    *GitLabSource    `json:"gitlab,omitempty"`
	Bitbucket *BitbucketSource `json:"bitbucket,omitempty"`
	Slack     *SlackSource     `json:"slack,omitempty"`
	Stripe    *StripeSource    `json:"stripe,omitempty"`

	// DedupeWindowDuration is DedupeWindow parsed by the loader.
	DedupeWindowDuration time.Duration `json:"-"`
}

// WebhookSource accepts any HTTP POST: JSON, form-encoded or raw bodies.
type WebhookSource struct {
	// EventType is the type of the events produced; default
	// "dev.signalbox.webhook.received".
	EventType string `json:"eventType,omitempty"`
	// EventSource is the source attribute of the events produced; default
	// "/{namespace}/eventsources/{name}".
	EventSource string `json:"eventSource,omitempty"`
	// IDHeader names a request header holding a delivery id; when present it
	// becomes the event id and deliveries with the same id are deduplicated.
	// Without it each request gets a random id.
	IDHeader string `json:"idHeader,omitempty"`
	// Headers copies request headers into extension attributes: each key is
	// a header name, its value the extension name ([a-z0-9]+).
	Headers map[string]string `json:"headers,omitempty"`
	// BearerToken, when set, requires `Authorization: Bearer <token>`.
	BearerToken *SecretRef `json:"bearerToken,omitempty"`
	// HMAC, when set, requires a header carrying an HMAC of the raw body.
	HMAC *WebhookHMAC `json:"hmac,omitempty"`
}

// WebhookHMAC describes an HMAC signature header over the raw request body.
type WebhookHMAC struct {
	SecretRef
	// Header is the request header carrying the signature. Required.
	Header string `json:"header"`
	// Algorithm is sha1, sha256 (the default) or sha512.
	Algorithm string `json:"algorithm,omitempty"`
	// Prefix is text before the digest in the header, such as "sha256=";
	// a header without it is refused.
	Prefix string `json:"prefix,omitempty"`
	// Encoding of the digest: hex (the default) or base64.
	Encoding string `json:"encoding,omitempty"`
}

// SecretRef names where a secret is read from.
type SecretRef struct {
	// SecretFrom is "env:NAME" (an environment variable) or "file:/path" (a
	// file, without its trailing newline), read when the configuration is
	// loaded.
	SecretFrom string `json:"secretFrom"`
	// Secret is the value SecretFrom names, set by the loader.
	Secret Secret `json:"-"`
}

// GitHubSource receives GitHub webhooks (repository, organization or app
// hooks), signed with X-Hub-Signature-256.
type GitHubSource struct {
	SecretRef
	// AllowSHA1 accepts deliveries signed only with the legacy SHA-1
	// X-Hub-Signature header. Off by default.
	AllowSHA1 bool `json:"allowSHA1,omitempty"`
}

// GitLabSource receives GitLab webhooks. With a secret, X-Gitlab-Token must
// equal it.
type GitLabSource struct {
	// SecretFrom is optional for GitLab: without it any request is accepted.
	SecretRef
}

// Bitbucket flavors.
const (
	BitbucketCloud  = "cloud"
	BitbucketServer = "server"
)

// BitbucketSource receives Bitbucket Cloud or Bitbucket Server (Data
// Center) webhooks. With a secret, X-Hub-Signature must carry the HMAC of
// the body.
type BitbucketSource struct {
	// SecretFrom is optional: without it any request is accepted.
	SecretRef
	// Flavor is "cloud" (the default) or "server".
	Flavor string `json:"flavor,omitempty"`
}

// SlackSource receives Slack Events API requests, slash commands and
// interactive payloads, signed with the app's signing secret.
type SlackSource struct {
	SecretRef
	// Tolerance is how far X-Slack-Request-Timestamp may be from now
	// (ISO-8601; default DefaultSignatureTolerance).
	Tolerance string `json:"tolerance,omitempty"`
	// ToleranceDuration is Tolerance parsed by the loader.
	ToleranceDuration time.Duration `json:"-"`
}

// StripeSource receives Stripe webhooks, signed with the endpoint's secret
// (whsec_...).
type StripeSource struct {
	SecretRef
	// Tolerance is how far the Stripe-Signature timestamp may be from now
	// (ISO-8601; default DefaultSignatureTolerance, Stripe's 300 s).
	Tolerance string `json:"tolerance,omitempty"`
	// ToleranceDuration is Tolerance parsed by the loader.
	ToleranceDuration time.Duration `json:"-"`
}

// Secret is a secret value read from a SecretRef. It never prints, logs or
// marshals its value; Reveal returns it. The zero Secret is empty.
type Secret struct {
	value []byte
}

// NewSecret returns a Secret holding a copy of b.
func NewSecret(b []byte) Secret { return Secret{value: append([]byte(nil), b...)} }

// Reveal returns the secret's bytes. Callers must not modify or log them.
func (s Secret) Reveal() []byte { return s.value }

// IsZero reports whether the secret is empty (not configured).
func (s Secret) IsZero() bool { return len(s.value) == 0 }

const redacted = "[redacted]"

// String returns a placeholder, never the value.
func (s Secret) String() string { return redacted }

// GoString returns a placeholder, never the value.
func (s Secret) GoString() string { return redacted }

// Format prints a placeholder for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue logs a placeholder.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes a placeholder.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
