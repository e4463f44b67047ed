package controllers_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/agentry-dev/agentry/controllers"
	"github.com/agentry-dev/agentry/internal/poll"
)

// k8s talks to the test API server directly, without a cache, so a test
// sees exactly what the operator wrote.
var (
	k8s    client.Client
	scheme *runtime.Scheme
)

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "FAIL: the controllers tests run against a real kube-apiserver and etcd, and KUBEBUILDER_ASSETS is not set.\n"+
			"Set it to the folder holding kube-apiserver and etcd: `make test` does, or run\n"+
			"  KUBEBUILDER_ASSETS=$(hack/tools.sh | tail -n1) go test ./controllers/")
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var logTo io.Writer = &operatorLog
	if testing.Verbose() {
		logTo = io.MultiWriter(&operatorLog, os.Stderr)
	}
	logf.SetLogger(zap.New(zap.WriteTo(logTo), zap.UseDevMode(true)))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting the test API server:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
		}
	}()

	scheme, err = controllers.NewScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	// The operator runs with exactly the RBAC config/rbac grants it.
	mgrCfg, err := operatorConfig(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: setting up the operator's identity:", err)
		return 1
	}
	opts := controllers.ManagerOptions(scheme, "")
	opts.Metrics = metricsserver.Options{BindAddress: "0"}
	opts.HealthProbeBindAddress = "0"
	mgr, err := ctrl.NewManager(mgrCfg, opts)
	if err == nil {
		err = controllers.Setup(mgr, controllers.Options{OrphanCheckInterval: 300 * time.Millisecond, IdleProtection: time.Second})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: setting up the manager:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "FAIL: the manager's caches did not sync")
		return 1
	}
	return m.Run()
}

// operatorConfig applies config/rbac's ClusterRole and ClusterRoleBinding
// and returns a client config for the service account they bind.
func operatorConfig(env *envtest.Environment) (*rest.Config, error) {
	ctx := context.Background()
	var binding rbacv1.ClusterRoleBinding
	for _, f := range []struct {
		file string
		obj  client.Object
	}{
		{"role.yaml", &rbacv1.ClusterRole{}},
		{"role_binding.yaml", &binding},
	} {
		b, err := os.ReadFile(filepath.Join("..", "config", "rbac", f.file))
		if err != nil {
			return nil, err
		}
		if err := yaml.UnmarshalStrict(b, f.obj); err != nil {
			return nil, fmt.Errorf("%s: %w", f.file, err)
		}
		if err := k8s.Create(ctx, f.obj); err != nil {
			return nil, fmt.Errorf("%s: %w", f.file, err)
		}
	}
	sa := binding.Subjects[0]
	user, err := env.ControlPlane.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"},
	}, nil)
	if err != nil {
		return nil, err
	}
	return user.Config(), nil
}

// operatorLog keeps everything the operator logged, to check no secret
// ever reaches a log.
var operatorLog syncBuffer

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newNamespace makes a namespace for one test. Without a namespace
// controller it is never emptied, only marked for deletion.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "agentry-test-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

// waitFor polls check until it returns nil, and fails the test with the last
// error if that takes longer than timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := poll.Until(context.Background(), timeout, 50*time.Millisecond, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// holds checks that check keeps returning nil for d.
func holds(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	if err := poll.Holds(context.Background(), d, 50*time.Millisecond, check); err != nil {
		t.Fatalf("%s stopped holding: %v", what, err)
	}
}
