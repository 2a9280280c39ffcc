package lambda

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// fakeLambda speaks the Lambda Invoke API (restJson1) on a local server.
// Every request's SigV4 signature is checked with the SDK's own signer
// against the credentials the fake was given; a bad one is answered as AWS
// does (403 InvalidSignatureException) and fails the test unless the test
// expects it.
type fakeLambda struct {
	srv         *httptest.Server
	creds       aws.Credentials
	region      string
	badSigOK    bool
	respond     func(w http.ResponseWriter, r *http.Request, body []byte)
	mu          sync.Mutex
	invocations []invocation
}

// invocation is one verified request the fake received.
type invocation struct {
	Path           string
	Qualifier      string
	InvocationType string
	Payload        []byte
}

const invokePrefix = "/2015-03-31/functions/"

func newFakeLambda(t *testing.T, creds aws.Credentials, respond func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeLambda {
	t.Helper()
	f := &fakeLambda{creds: creds, region: "eu-west-1", respond: respond}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, invokePrefix) ||
			!strings.HasSuffix(r.URL.Path, "/invocations") {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			awsError(w, http.StatusNotFound, "UnknownOperationException", "unknown operation")
			return
		}
		if err := verifySigV4(r, body, f.creds, f.region); err != nil {
			if !f.badSigOK {
				t.Errorf("signature check: %v", err)
			}
			awsError(w, http.StatusForbidden, "InvalidSignatureException",
				"The request signature we calculated does not match the signature you provided.")
			return
		}
		f.mu.Lock()
		f.invocations = append(f.invocations, invocation{
			Path:           r.URL.Path,
			Qualifier:      r.URL.Query().Get("Qualifier"),
			InvocationType: r.Header.Get("X-Amz-Invocation-Type"),
			Payload:        body,
		})
		f.mu.Unlock()
		f.respond(w, r, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLambda) received() []invocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]invocation(nil), f.invocations...)
}

// awsError answers as Lambda does for a service error: the error type in
// X-Amzn-ErrorType and a JSON body with the message.
func awsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Amzn-ErrorType", code)
	w.Header().Set("X-Amzn-RequestId", "req-1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"Type":"User","message":%q}`, msg)
}

// verifySigV4 recomputes the request's signature with the SDK's signer over
// exactly the headers the client signed, at the time it stated, and compares
// the whole Authorization header.
func verifySigV4(r *http.Request, body []byte, creds aws.Credentials, region string) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("authorization %q is not SigV4", auth)
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] != creds.AccessKeyID || scope[2] != region || scope[3] != "lambda" {
		return fmt.Errorf("credential scope %q, want key %s, region %s, service lambda",
			fields["Credential"], creds.AccessKeyID, region)
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %w", err)
	}

	req, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.ContentLength = r.ContentLength
	for h := range strings.SplitSeq(fields["SignedHeaders"], ";") {
		if h != "host" && h != "content-length" {
			req.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "lambda", region, when)
	if err != nil {
		return err
	}
	if got := req.Header.Get("Authorization"); got != auth {
		return errors.New("signature mismatch")
	}
	return nil
}
