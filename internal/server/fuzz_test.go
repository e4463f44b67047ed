package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/server/store"
)

// Every decoder of a request body is fuzzed. Seeds live in
// testdata/fuzz/<FuzzName>/. Each target checks that a refusal is a 4xx
// answer (never a panic or a 500) and that what is accepted holds the
// decoder's promises.

// wantRefusal fails unless err is a client error answer.
func wantRefusal(t *testing.T, err error) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.typeKey == "" || ae.message == "" {
		t.Fatalf("refusal %v is not a 4xx answer with a typeKey and a message", err)
	}
}

func FuzzDecodeJobSpec(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, err := decodeJobSpec(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		for _, st := range spec.Steps {
			if st.Task != "CmdLine@2" && st.Task != "Bash@3" {
				t.Fatalf("accepted task %q", st.Task)
			}
		}
		// What was accepted is stable: encoding it and decoding again gives it back.
		again, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		spec2, err := decodeJobSpec(again)
		if err != nil {
			t.Fatalf("re-decoding an accepted spec: %v", err)
		}
		if diff := cmp.Diff(spec, spec2); diff != "" {
			t.Fatalf("re-decoded spec differs (-first +second):\n%s", diff)
		}
		// And it makes a job message.
		msg := jobMessage(store.Job{RequestID: 1, Spec: spec, Name: spec.Name}, "http://h", "tok")
		if _, err := json.Marshal(msg); err != nil || len(msg.Steps) != len(spec.Steps) {
			t.Fatalf("job message: %v, %d steps for %d", err, len(msg.Steps), len(spec.Steps))
		}
	})
}

func FuzzDecodeAgent(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAgent(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if _, err := a.Authorization.PublicKey.RSA(); err != nil || checkName("n", a.Name) != nil {
			t.Fatalf("accepted an agent with key error %v, name %q", err, a.Name)
		}
	})
}

func FuzzDecodePool(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := decodePool(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if checkName("n", name) != nil {
			t.Fatalf("accepted pool name %q", name)
		}
	})
}

func FuzzDecodeSession(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSession(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if len(s.OwnerName) > maxNameLen || len(s.SystemCapabilities) > maxCaps {
			t.Fatalf("accepted an oversized session %q", s.OwnerName)
		}
	})
}

func FuzzDecodeJobRequestUpdate(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := decodeJobRequestUpdate(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if u.FinishTime != nil && u.Result == nil {
			t.Fatal("accepted a finish without a result")
		}
		if u.Result != nil && *u.Result == "" {
			t.Fatal("accepted an empty result")
		}
	})
}

func FuzzDecodeTimelineRecords(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeTimelineRecords(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		now := time.Now()
		for _, r := range recs {
			if r.ID == "" {
				t.Fatal("accepted a record without an id")
			}
			merged := store.MergeTimelineRecord(r, r, now)
			if merged.ID != r.ID || merged.ChangeID != r.ChangeID+1 {
				t.Fatalf("merge of %+v gave %+v", r, merged)
			}
		}
	})
}

func FuzzDecodeFeed(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		feed, err := decodeFeed(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if len(feed.Value) > maxFeedBatch {
			t.Fatalf("accepted %d lines", len(feed.Value))
		}
	})
}

func FuzzDecodeLogCreate(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLogCreate(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if len(l.Path) > maxPathLen {
			t.Fatalf("accepted a %d-byte path", len(l.Path))
		}
	})
}

func FuzzDecodeJobEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeJobEvent(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if ev.Name == "JobCompleted" && ev.Result == "" {
			t.Fatal("accepted JobCompleted without a result")
		}
	})
}

func FuzzTokenRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeTokenRequest(b)
		if err != nil {
			wantRefusal(t, err)
			var ae *apiError
			if errors.As(err, &ae) && ae.oauth == "" {
				t.Fatalf("token endpoint refusal without an RFC 6749 error code: %v", err)
			}
			return
		}
		if req.ClientID == "" || req.Assertion == "" || len(req.Assertion) > maxAssertion {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string) {
		scheme, cred, ok := parseAuthorization(header)
		if !ok {
			if scheme != "" || cred != "" {
				t.Fatalf("refused header gave %q, %q", scheme, cred)
			}
			return
		}
		if cred == "" || (scheme != "Bearer" && scheme != "Basic") {
			t.Fatalf("accepted %q as %q, %q", header, scheme, cred)
		}
		if scheme == "Bearer" && strings.TrimSpace(cred) == cred {
			if s2, c2, ok2 := parseAuthorization("Bearer " + cred); !ok2 || s2 != "Bearer" || c2 != cred {
				t.Fatalf("Bearer %q does not round-trip", cred)
			}
		}
	})
}

func FuzzDecodeAgentUpdate(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAgentUpdate(b)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if a.Authorization != nil && a.Authorization.PublicKey != nil {
			if _, err := a.Authorization.PublicKey.RSA(); err != nil {
				t.Fatalf("accepted an unusable key: %v", err)
			}
		}
		if a.MaxParallelism < 0 {
			t.Fatalf("accepted maxParallelism %d", a.MaxParallelism)
		}
	})
}

func FuzzParseQueueWatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // net/http hands handlers what parses
		}
		w, err := parseQueueWatch(q)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if w.After < 0 || w.Wait < 0 || w.Wait > maxQueueWait {
			t.Fatalf("accepted %+v", w)
		}
	})
}

func FuzzAPIVersion(f *testing.F) {
	f.Fuzz(func(t *testing.T, accept, contentType, query string) {
		r := &http.Request{URL: &url.URL{RawQuery: query}, Header: http.Header{}}
		r.Header.Set("Accept", accept)
		r.Header.Set("Content-Type", contentType)
		v, ok := apiVersion(r)
		if ok && v != "" && !apiVersionPattern.MatchString(v) {
			t.Fatalf("accepted api-version %q", v)
		}
	})
}
