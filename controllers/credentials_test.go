package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// A pool's token is read from its Secret once per TTL, a rotated token is
// used once the TTL has passed, and a missing Secret is reported at once and
// never remembered.
func TestCredentialsCache(t *testing.T) {
	ctx := context.Background()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: "ci"},
		Data:       map[string][]byte{"token": []byte(" first\n")},
	}
	reads := 0
	c := fake.NewClientBuilder().WithObjects(secret).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads++
			return cl.Get(ctx, key, obj, opts...)
		},
	}).Build()
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	creds := newCredentials(c, 5*time.Second)
	creds.now = func() time.Time { return now }
	pool := &agentryv1.AgentPool{ObjectMeta: metav1.ObjectMeta{Name: "linux", Namespace: "ci"}}
	pool.Spec.Server.CredentialsSecretRef.Name = "admin"

	for range 3 {
		if tok, err := creds.token(ctx, pool); err != nil || tok != "first" {
			t.Fatalf("token = %q, %v; want \"first\"", tok, err)
		}
	}
	if reads != 1 {
		t.Errorf("three reads within the TTL read the Secret %d times, want 1", reads)
	}

	secret.Data["token"] = []byte("second")
	if err := c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	if tok, err := creds.token(ctx, pool); err != nil || tok != "second" {
		t.Errorf("after the TTL, token = %q, %v; want the rotated \"second\"", tok, err)
	}

	if err := c.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	for range 2 {
		if _, err := creds.token(ctx, pool); !errors.Is(err, errNoCredentials) {
			t.Errorf("with the Secret gone, err = %v; want errNoCredentials", err)
		}
	}
	before := reads
	if _, err := creds.token(ctx, pool); !errors.Is(err, errNoCredentials) || reads != before+1 {
		t.Errorf("a missing Secret was remembered (err %v, reads %d → %d)", err, before, reads)
	}
}
