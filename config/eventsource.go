package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

// sourceKinds are the provider blocks this release implements, in the order
// they are listed in messages.
var sourceKinds = []string{
	ProviderWebhook, ProviderGitHub, ProviderGitLab, ProviderBitbucket, ProviderSlack, ProviderStripe,
}

// plannedSourceKinds are provider blocks DESIGN names that a later release
// will implement; using one says so rather than "unknown field".
var plannedSourceKinds = []string{
	"calendar", "file", "s3", "mqtt", "nats", "amqp", "kafka", "redis", "kubernetes",
}

// inlineSecret explains why a secret may not be written into the file.
const inlineSecret = "secrets are never written inline: use secretFrom: env:NAME or file:/path"

func init() {
	// unsupportedFields is declared with the Sensor schema; the EventSource
	// entries are added here so that they live next to the kinds they name.
	planned := map[string]string{}
	for _, k := range plannedSourceKinds {
		planned[k] = fmt.Sprintf("event source kind %q is not supported yet (supported kinds: %s)",
			k, strings.Join(sourceKinds, ", "))
	}
	unsupportedFields[reflect.TypeFor[EventSourceSpec]()] = planned
	for _, t := range []reflect.Type{
		reflect.TypeFor[GitHubSource](), reflect.TypeFor[GitLabSource](), reflect.TypeFor[BitbucketSource](),
		reflect.TypeFor[SlackSource](), reflect.TypeFor[StripeSource](), reflect.TypeFor[SecretRef](),
		reflect.TypeFor[WebhookHMAC](),
	} {
		unsupportedFields[t] = map[string]string{"secret": inlineSecret, "token": inlineSecret}
	}
}

// checkEventSource applies the defaults a user relies on, validates an
// EventSource and reads its secrets.
func checkEventSource(c *checker, s *EventSource) {
	if s.Metadata.Namespace == "" {
		s.Metadata.Namespace = "default"
	}
	// The name is a path segment of the source's URL.
	c.metadata(s.Metadata.Name, s.Metadata.Namespace, true)
	sp := &s.Spec
	if sp.Broker == "" {
		sp.Broker = "default"
	}

	var set []string
	for _, k := range sourceKinds {
		if sp.provider(k) {
			set = append(set, k)
		}
	}
	switch {
	case len(set) == 0:
		c.errorf(0, "spec", "exactly one source kind is required (supported kinds: %s)",
			strings.Join(sourceKinds, ", "))
	case len(set) > 1:
		c.errorf(0, "spec."+set[1], "only one source kind is allowed per EventSource, got %s",
			strings.Join(set, " and "))
	}

	switch {
	case sp.MaxPayloadSize == 0:
		sp.MaxPayloadSize = DefaultMaxPayloadSize
	case sp.MaxPayloadSize < 0 || sp.MaxPayloadSize > MaxMaxPayloadSize:
		c.errorf(0, "spec.maxPayloadSize", "must be between 1 and %d bytes, got %d",
			MaxMaxPayloadSize, sp.MaxPayloadSize)
	}
	if strings.TrimSpace(sp.Filter) != "" {
		if _, err := celexpr.Compile(sp.Filter); err != nil {
			c.errorf(0, "spec.filter", "%s", oneLine(err.Error()))
		}
	}
	if sp.DedupeWindow == "" {
		sp.DedupeWindow = DefaultDedupeWindow
	}
	sp.DedupeWindowDuration = c.duration(sp.DedupeWindow, "spec.dedupeWindow", nonNegative)

	switch {
	case sp.Webhook != nil:
		c.webhookSource(sp.Webhook, "spec.webhook")
	case sp.GitHub != nil:
		c.secret(&sp.GitHub.SecretRef, "spec.github", true)
	case sp.GitLab != nil:
		c.secret(&sp.GitLab.SecretRef, "spec.gitlab", false)
	case sp.Bitbucket != nil:
		b := sp.Bitbucket
		if b.Flavor == "" {
			b.Flavor = BitbucketCloud
		}
		if b.Flavor != BitbucketCloud && b.Flavor != BitbucketServer {
			c.errorf(0, "spec.bitbucket.flavor", "must be %q or %q, got %q",
				BitbucketCloud, BitbucketServer, b.Flavor)
		}
		c.secret(&b.SecretRef, "spec.bitbucket", false)
	case sp.Slack != nil:
		c.secret(&sp.Slack.SecretRef, "spec.slack", true)
		sp.Slack.ToleranceDuration = c.tolerance(&sp.Slack.Tolerance, "spec.slack.tolerance")
	case sp.Stripe != nil:
		c.secret(&sp.Stripe.SecretRef, "spec.stripe", true)
		sp.Stripe.ToleranceDuration = c.tolerance(&sp.Stripe.Tolerance, "spec.stripe.tolerance")
	}
}

// provider reports whether the block named kind is set.
func (sp *EventSourceSpec) provider(kind string) bool {
	switch kind {
	case ProviderWebhook:
		return sp.Webhook != nil
	case ProviderGitHub:
		return sp.GitHub != nil
	case ProviderGitLab:
		return sp.GitLab != nil
	case ProviderBitbucket:
		return sp.Bitbucket != nil
	case ProviderSlack:
		return sp.Slack != nil
	case ProviderStripe:
		return sp.Stripe != nil
	}
	return false
}

// duration parses an ISO-8601 duration at path, reporting what check says
// about it.
func (c *checker) duration(s, path string, check func(int64) string) time.Duration {
	v, err := ParseDuration(s)
	if err != nil {
		c.errorf(0, path, "%v", err)
		return 0
	}
	if msg := check(int64(v)); msg != "" {
		c.errorf(0, path, "%s, got %q", msg, s)
		return 0
	}
	return v
}

func (c *checker) tolerance(s *string, path string) time.Duration {
	if *s == "" {
		*s = DefaultSignatureTolerance
	}
	return c.duration(*s, path, positive)
}

// webhookHMACAlgorithms and webhookHMACEncodings are what WebhookHMAC accepts.
var (
	webhookHMACAlgorithms = []string{"sha1", "sha256", "sha512"}
	webhookHMACEncodings  = []string{"hex", "base64"}
)

// credentialHeaders may not be copied into events: they carry secrets.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie"}

func (c *checker) webhookSource(w *WebhookSource, path string) {
	if w.EventType == "" {
		w.EventType = "dev.signalbox.webhook.received"
	}
	if w.EventSource != "" {
		if _, err := url.Parse(w.EventSource); err != nil {
			c.errorf(0, path+".eventSource", "must be a URI reference: %v", err)
		}
	}
	if w.IDHeader != "" && !validHeaderName(w.IDHeader) {
		c.errorf(0, path+".idHeader", "invalid header name %q", w.IDHeader)
	}
	if w.BearerToken != nil && w.HMAC != nil {
		c.errorf(0, path+".hmac", "set at most one of bearerToken and hmac")
	}
	if w.BearerToken != nil {
		c.secret(w.BearerToken, path+".bearerToken", true)
	}
	secretHeaders := slices.Clone(credentialHeaders)
	if h := w.HMAC; h != nil {
		hp := path + ".hmac"
		c.secret(&h.SecretRef, hp, true)
		switch {
		case h.Header == "":
			c.errorf(0, hp+".header", "missing field: the header carrying the signature is required")
		case !validHeaderName(h.Header):
			c.errorf(0, hp+".header", "invalid header name %q", h.Header)
		default:
			secretHeaders = append(secretHeaders, h.Header)
		}
		if h.Algorithm == "" {
			h.Algorithm = "sha256"
		}
		if !slices.Contains(webhookHMACAlgorithms, h.Algorithm) {
			c.errorf(0, hp+".algorithm", "unknown algorithm %q (allowed: %s)", h.Algorithm,
				strings.Join(webhookHMACAlgorithms, ", "))
		}
		if h.Encoding == "" {
			h.Encoding = "hex"
		}
		if !slices.Contains(webhookHMACEncodings, h.Encoding) {
			c.errorf(0, hp+".encoding", "unknown encoding %q (allowed: %s)", h.Encoding,
				strings.Join(webhookHMACEncodings, ", "))
		}
	}

	exts := map[string]string{}
	for _, header := range sortedKeys(w.Headers) {
		ext := w.Headers[header]
		p := keyPath(path+".headers", header, false)
		switch {
		case !validHeaderName(header):
			c.errorf(0, p, "invalid header name %q", header)
		case slices.ContainsFunc(secretHeaders, func(s string) bool { return strings.EqualFold(s, header) }):
			c.errorf(0, p, "header %q carries credentials and cannot be copied into events", header)
		case !cloudevent.ValidExtensionName(ext):
			c.errorf(0, p, "invalid extension name %q: names are lower-case letters and digits", ext)
		case reservedExtension(ext):
			c.errorf(0, p, "extension name %q is reserved", ext)
		case exts[ext] != "":
			c.errorf(0, p, "extension %q is already set from header %q", ext, exts[ext])
		default:
			exts[ext] = header
		}
	}
}

// reservedExtension reports whether name is a context attribute or one of
// the extensions the broker manages.
func reservedExtension(name string) bool {
	switch name {
	case "id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema":
		return true
	}
	return strings.HasPrefix(name, "knative")
}

// validHeaderName reports whether s is an HTTP header field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// secret reads the secret ref at path names. A missing ref is a problem only
// when required. Messages never include the value, and never echo what was
// written in secretFrom unless it parsed as a reference: a user may have put
// the secret itself there.
func (c *checker) secret(ref *SecretRef, path string, required bool) {
	field := path + ".secretFrom"
	if ref.SecretFrom == "" {
		// A secret written inline was refused already; saying secretFrom
		// is missing too would only repeat it.
		if required && !c.related(path+".secret") && !c.related(path+".token") {
			c.errorf(0, field, "missing field: a secret is required (env:NAME or file:/path)")
		}
		return
	}
	v, err := ReadSecret(ref.SecretFrom)
	if err != nil {
		c.errorf(0, field, "%v", err)
		return
	}
	ref.Secret = NewSecret(v)
}

// ErrSecretRef is returned by ReadSecret for a reference that is neither
// env:NAME nor file:/path.
var ErrSecretRef = errors.New(`a secret reference must be "env:NAME" or "file:/path"`)

// ReadSecret returns the value a secretFrom reference names: the environment
// variable NAME for "env:NAME", the content of the file for "file:/path"
// without one trailing newline. An unset variable, an unreadable file and an
// empty value are errors; errors never contain the value.
func ReadSecret(ref string) ([]byte, error) {
	kind, name, ok := strings.Cut(ref, ":")
	switch {
	case !ok || name == "":
		return nil, ErrSecretRef
	case kind == "env":
		v, set := os.LookupEnv(name)
		if !set {
			return nil, fmt.Errorf("environment variable %s is not set", name)
		}
		if v == "" {
			return nil, fmt.Errorf("environment variable %s is empty", name)
		}
		return []byte(v), nil
	case kind == "file":
		b, err := readSecretFile(name)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, fmt.Errorf("cannot read secret file %s: %w", name, err)
		}
		// Files written by editors and `echo` end in a newline that is not
		// part of the secret.
		b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("secret file %s is empty", name)
		}
		return b, nil
	}
	return nil, ErrSecretRef
}

// maxSecretSize bounds a secret file: secrets are short, and a reference to
// a device such as /dev/zero must not hang the load.
const maxSecretSize = 64 << 10

// readSecretFile reads a regular file of at most maxSecretSize bytes.
func readSecretFile(name string) ([]byte, error) {
	// Stat before opening: opening a named pipe blocks until a writer comes.
	if info, err := os.Stat(name); err != nil {
		return nil, err
	} else if !info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretSize {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretSize)
	}
	return b, nil
}
