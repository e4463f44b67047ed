package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// poolLookups is a Server that counts GetPoolByName calls.
type poolLookups struct {
	Server
	calls int
	err   error
}

func (p *poolLookups) GetPoolByName(_ context.Context, name string) (*pipelines.TaskAgentPool, error) {
	p.calls++
	if p.err != nil {
		return nil, p.err
	}
	return &pipelines.TaskAgentPool{ID: 7, Name: name}, nil
}

// A pool's server pool is looked up once per serverPoolTTL, again when its
// server settings or token change, and a failed lookup is not remembered.
func TestServerPoolIsLookedUpOncePerTTL(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	r := &AgentPoolReconciler{Now: func() time.Time { return now }}
	pool := &agentryv1.AgentPool{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "linux"}}
	pool.Spec.Server.URL, pool.Spec.Server.PoolName = "https://ci.example", "default"
	srv := &poolLookups{}
	lookup := func(token string) {
		t.Helper()
		if _, err := r.serverPool(ctx, pool, srv, token); err != nil && srv.err == nil {
			t.Fatal(err)
		}
	}

	lookup("a")
	lookup("a")
	if srv.calls != 1 {
		t.Errorf("two reconciles in a row looked the pool up %d times, want 1", srv.calls)
	}
	lookup("b")
	if srv.calls != 2 {
		t.Errorf("a new token looked the pool up %d times in all, want 2", srv.calls)
	}
	now = now.Add(serverPoolTTL)
	lookup("b")
	if srv.calls != 3 {
		t.Errorf("after %s: %d lookups in all, want 3", serverPoolTTL, srv.calls)
	}
	srv.err = errors.New("pool not found")
	lookup("c")
	srv.err = nil
	lookup("c")
	if srv.calls != 5 {
		t.Errorf("after a failed lookup: %d lookups in all, want 5 (the failure is not remembered)", srv.calls)
	}
}
