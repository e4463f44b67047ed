// Package stack starts agentry whole on one machine: a small real Kubernetes
// cluster (test/cluster) with the process-backed node, the real
// agentry-server and agentry-manager binaries, and the pool-admin token
// Secret. The end-to-end suite and `make demo` both stand on it.
package stack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/test/cluster"
)

// Namespace is where the sample pool, its agents and the admin token live.
const Namespace = "agentry-system"

// AdminSecret is the name of the Secret holding the pool-admin token.
const AdminSecret = "agentry-admin-token"

// Options configure a stack.
type Options struct {
	// RepoRoot is the repository root (CRDs and samples are read from it).
	RepoRoot string
	// AssetsDir holds kube-apiserver, etcd, kubectl, kube-scheduler and
	// kube-controller-manager; defaults to $KUBEBUILDER_ASSETS.
	AssetsDir string
	// WorkDir receives binaries, logs and data; it must exist.
	WorkDir string
	// PoolName is the server-side pool to create.
	PoolName string
	// Progress, if set, receives one line per step.
	Progress io.Writer
	// ManagerArgs are extra agentry-manager flags.
	ManagerArgs []string
	// IdleCPUPods runs the agent pods' processes on CPU nothing else wants;
	// see procnode.Config.IdleCPU.
	IdleCPUPods bool
	// APIServerFlags are extra kube-apiserver flags; see
	// cluster.Options.APIServerFlags.
	APIServerFlags map[string]string
}

// Stack is a running agentry installation.
type Stack struct {
	opts      Options
	Cluster   *cluster.Cluster
	Kube      kubernetes.Interface
	BinDir    string
	ServerURL string
	// MetricsURL is agentry-manager's Prometheus endpoint.
	MetricsURL string
	AdminToken string
	Jobs       jobapi.Client
	Admin      *pipelines.Client

	mu    sync.Mutex
	procs []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// PID returns the process id of the named component (agentry-server,
// agentry-manager), or 0 when it is not running.
func (s *Stack) PID(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.name == name {
			select {
			case <-p.done:
			default:
				return p.cmd.Process.Pid
			}
		}
	}
	return 0
}

func (s *Stack) progress(format string, args ...any) {
	if s.opts.Progress != nil {
		fmt.Fprintf(s.opts.Progress, format+"\n", args...)
	}
}

// Start builds the binaries and starts everything. Call Stop when done,
// also after an error.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.AssetsDir == "" {
		opts.AssetsDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if opts.AssetsDir == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run through `make test` or `make e2e`, which build the tools")
	}
	if opts.PoolName == "" {
		opts.PoolName = "default"
	}
	s := &Stack{opts: opts, BinDir: filepath.Join(opts.WorkDir, "bin")}
	// The in-process parts (envtest, the node) log through these; their
	// output is not what a user of the stack wants on screen.
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())

	s.progress("building agentry-server, agentry-manager and agentry-agent")
	if err := BuildBinaries(ctx, opts.RepoRoot, s.BinDir); err != nil {
		return s, err
	}

	s.progress("starting kube-apiserver, etcd, kube-scheduler, kube-controller-manager and the process-backed node")
	cl, err := cluster.Start(ctx, cluster.Options{
		AssetsDir: opts.AssetsDir,
		CRDDirs:   []string{filepath.Join(opts.RepoRoot, "config", "crd", "bases")},
		NodePATH:  s.BinDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		LogDir:    filepath.Join(opts.WorkDir, "logs"),

		NodeIdleCPU:    opts.IdleCPUPods,
		APIServerFlags: opts.APIServerFlags,
	})
	if err != nil {
		return s, fmt.Errorf("starting the cluster: %w", err)
	}
	s.Cluster = cl
	if s.Kube, err = kubernetes.NewForConfig(cl.Config); err != nil {
		return s, err
	}

	s.AdminToken = randomToken()
	s.progress("starting agentry-server")
	if err := s.startServer(ctx); err != nil {
		return s, err
	}
	s.Admin = pipelines.NewClient(s.ServerURL, pipelines.BearerToken(s.AdminToken), nil)
	s.Jobs = jobapi.Client{Client: s.Admin}
	if out, err := s.ServerCLI(ctx, "pool", "create", opts.PoolName); err != nil {
		return s, fmt.Errorf("agentry-server pool create: %w: %s", err, out)
	}

	if _, err := s.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return s, err
	}
	if _, err := s.Kube.CoreV1().Secrets(Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: AdminSecret, Namespace: Namespace},
		StringData: map[string]string{"token": s.AdminToken},
	}, metav1.CreateOptions{}); err != nil {
		return s, err
	}

	s.progress("starting agentry-manager")
	if err := s.startManager(ctx); err != nil {
		return s, err
	}
	return s, nil
}

// BuildBinaries builds the three programs into dir.
func BuildBinaries(ctx context.Context, repoRoot, dir string) error {
	for name, pkg := range map[string]string{"agentry-server": "./cmd/server", "agentry-manager": "./cmd/manager", "agentry-agent": "./cmd/agent"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "agentry-admin-" + hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Stack) logFile(name string) (*os.File, error) {
	dir := filepath.Join(s.opts.WorkDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Appending keeps a restarted component's earlier log.
	return os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// spawn starts a long-running child process whose output goes to a log file.
func (s *Stack) spawn(name string, env []string, args ...string) (*exec.Cmd, error) {
	f, err := s.logFile(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.BinDir, name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.procs = append(s.procs, c)
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); f.Close(); close(c.done) }()
	return cmd, nil
}

func (s *Stack) startServer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s.ServerURL = "http://" + addr
	data := filepath.Join(s.opts.WorkDir, "server-data")
	if _, err := s.spawn("agentry-server", []string{"AGENTRY_ADMIN_TOKEN=" + s.AdminToken},
		"serve", "--listen", addr, "--data", data); err != nil {
		return err
	}
	// The server is up when it answers an authenticated pool list.
	c := pipelines.NewClient(s.ServerURL, pipelines.BearerToken(s.AdminToken), &http.Client{Timeout: 2 * time.Second})
	return waitFor(ctx, 30*time.Second, "agentry-server to answer", func() error {
		_, err := c.Do(ctx, http.MethodGet, "/_apis/distributedtask/pools", nil, nil, nil)
		return err
	})
}

func (s *Stack) startManager(ctx context.Context) error {
	probePort, err := freePort()
	if err != nil {
		return err
	}
	metricsPort, err := freePort()
	if err != nil {
		return err
	}
	s.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	args := append([]string{
		"--kubeconfig", s.Cluster.Kubeconfig,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probePort),
	}, s.opts.ManagerArgs...)
	if _, err := s.spawn("agentry-manager", nil, args...); err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort)
	return waitFor(ctx, 60*time.Second, "agentry-manager to be ready", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
}

// RestartManager kills agentry-manager without warning (SIGKILL, as a crash
// or an OOM kill would) and starts a new one, waiting until it is ready.
func (s *Stack) RestartManager(ctx context.Context) error {
	s.mu.Lock()
	var old *child
	kept := s.procs[:0]
	for _, p := range s.procs {
		if p.name == "agentry-manager" {
			old = p
			continue
		}
		kept = append(kept, p)
	}
	s.procs = kept
	s.mu.Unlock()
	if old != nil {
		_ = syscall.Kill(-old.cmd.Process.Pid, syscall.SIGKILL)
		<-old.done
	}
	return s.startManager(ctx)
}

// ServerCLI runs the real agentry-server client CLI against the stack's server.
func (s *Stack) ServerCLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "agentry-server"), append(args, "--server", s.ServerURL)...)
	cmd.Env = append(os.Environ(), "AGENTRY_ADMIN_TOKEN="+s.AdminToken)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("%w: %s", err, ee.Stderr)
		}
	}
	return strings.TrimSpace(string(out)), err
}

// ApplySample applies config/samples/<name> with the real kubectl, pointing
// its server URL at this stack's agentry-server.
func (s *Stack) ApplySample(ctx context.Context, name string) error {
	b, err := os.ReadFile(filepath.Join(s.opts.RepoRoot, "config", "samples", name))
	if err != nil {
		return err
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "url:") {
			line = line[:strings.Index(line, "url:")] + "url: " + s.ServerURL
		}
		out = append(out, line)
	}
	path := filepath.Join(s.opts.WorkDir, name)
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	o, err := s.Cluster.Kubectl("apply", "-f", path)
	if err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w: %s", name, err, o)
	}
	return nil
}

// Logs returns the tail of a component's log, for failure messages.
func (s *Stack) Logs(name string, lines int) string {
	b, err := os.ReadFile(filepath.Join(s.opts.WorkDir, "logs", name+".log"))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// Stop ends every process the stack started and the cluster. A nil Stack
// (Start failed before it started anything) has nothing to stop.
func (s *Stack) Stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for _, p := range procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	grace, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-grace.Done():
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	if s.Cluster != nil {
		s.Cluster.Stop()
	}
}

// waitFor retries check until it succeeds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	if err := poll.Until(ctx, timeout, 100*time.Millisecond, check); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}
