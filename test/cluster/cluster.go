// Package cluster starts a small real Kubernetes cluster for tests: envtest's
// kube-apiserver and etcd, the real kube-scheduler and kube-controller-manager
// (garbage collector and namespace controllers) as child processes, and a
// process-backed node (package procnode) in this process. Pods are scheduled,
// run as local processes, and cascade-deleted as in production.
//
// The binaries come from one folder (KUBEBUILDER_ASSETS, built by
// hack/tools.sh): kube-apiserver, etcd, kubectl, kube-scheduler and
// kube-controller-manager.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agentry-dev/agentry/test/procnode"
)

// Options configure a cluster. Only AssetsDir is needed, and it defaults to
// $KUBEBUILDER_ASSETS.
type Options struct {
	// AssetsDir holds kube-apiserver, etcd, kubectl, kube-scheduler and
	// kube-controller-manager; default $KUBEBUILDER_ASSETS.
	AssetsDir string
	// CRDDirs are installed (every file in each) before the scheduler and
	// controller manager start, so the garbage collector knows their kinds.
	CRDDirs []string
	// NodePATH is where the node looks up bare command names; default $PATH.
	NodePATH string
	// NodeEnv is added to every pod process's environment ("KEY=VALUE").
	NodeEnv []string
	// NodeIdleCPU runs the pods' processes on CPU nothing else wants; see
	// procnode.Config.IdleCPU.
	NodeIdleCPU bool
	// NodeName names the node; default "procnode".
	NodeName string
	// LogDir receives one log file per component (kube-apiserver.log,
	// etcd.log, kube-scheduler.log, kube-controller-manager.log,
	// procnode.log); default a folder that Stop removes.
	LogDir string
	// Scheme is Client's scheme; default client-go's (core kinds only).
	Scheme *runtime.Scheme
	// APIServerFlags are set on kube-apiserver's command line, name (without
	// "--") to value, over envtest's own; for example an audit log.
	APIServerFlags map[string]string
}

// Cluster is a running cluster. Stop it when done.
type Cluster struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file, for kubectl, helm
	// and child processes.
	Kubeconfig string
	// Clientset and Client are admin clients.
	Clientset kubernetes.Interface
	Client    client.Client
	// Node is the process-backed node every pod runs on.
	Node *procnode.Node
	// LogDir holds the components' log files.
	LogDir string
	// AssetsDir holds the binaries.
	AssetsDir string

	dir      string // removed by Stop: kubeconfig, kubectl cache, pod folders, default LogDir
	env      *envtest.Environment
	reaper   *reaper
	children []*child
	logs     []*os.File

	nodeCancel context.CancelFunc
	nodeDone   chan error

	stopOnce sync.Once
	stopErr  error
}

// Component names, which are also the log files' base names.
const (
	apiServer         = "kube-apiserver"
	etcd              = "etcd"
	kubectl           = "kubectl"
	scheduler         = "kube-scheduler"
	controllerManager = "kube-controller-manager"
	nodeLog           = "procnode"
)

// Start starts the cluster and returns once it works end to end: a probe pod
// was scheduled onto the node by kube-scheduler and ran to completion, and
// deleting its owner removed it through kube-controller-manager's garbage
// collector. On error everything started is stopped again, and the error
// carries the tail of every component's log.
func Start(ctx context.Context, opts Options) (cl *Cluster, retErr error) {
	if opts.AssetsDir == "" {
		opts.AssetsDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if opts.AssetsDir == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run hack/tools.sh (or make test) and export KUBEBUILDER_ASSETS=<the folder it prints last>")
	}
	var missing []string
	for _, b := range []string{apiServer, etcd, kubectl, scheduler, controllerManager} {
		if fi, err := os.Stat(filepath.Join(opts.AssetsDir, b)); err != nil || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS=%s lacks %s: run hack/tools.sh", opts.AssetsDir, strings.Join(missing, ", "))
	}
	if opts.NodePATH == "" {
		opts.NodePATH = os.Getenv("PATH")
	}
	if opts.NodeName == "" {
		opts.NodeName = "procnode"
	}
	if opts.Scheme == nil {
		opts.Scheme = clientgoscheme.Scheme
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
	}

	dir, err := os.MkdirTemp("", "agentry-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, AssetsDir: opts.AssetsDir, LogDir: opts.LogDir}
	if c.LogDir == "" {
		c.LogDir = filepath.Join(dir, "logs")
	}
	defer func() {
		if retErr != nil {
			tails := c.LogTails(30)
			_ = c.Stop()
			cl, retErr = nil, fmt.Errorf("%w\n%s", retErr, tails)
		}
	}()
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return c, err
	}
	if c.reaper, err = startReaper(); err != nil {
		return c, err
	}
	c.reaper.remove(dir)

	if err := c.startControlPlane(opts); err != nil {
		return c, err
	}
	if err := c.startNode(ctx, opts); err != nil {
		return c, err
	}
	for _, ch := range []struct {
		name string
		args []string
	}{
		// Their default client rate limits (50 and 20 queries/s) would pace a
		// burst of 100 agent pods, not the operator being tested.
		{scheduler, []string{"--kubeconfig=" + c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
			"--kube-api-qps=1000", "--kube-api-burst=2000"}},
		{controllerManager, []string{"--kubeconfig=" + c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
			"--kube-api-qps=1000", "--kube-api-burst=2000",
			"--controllers=garbagecollector,namespace,disruption", "--use-service-account-credentials=false"}},
	} {
		if err := c.startChild(ch.name, ch.args); err != nil {
			return c, err
		}
	}
	if err := c.probe(ctx); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.LogDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	c.logs = append(c.logs, f)
	return f, nil
}

func (c *Cluster) startControlPlane(opts Options) error {
	apiLog, err := c.logFile(apiServer)
	if err != nil {
		return err
	}
	etcdLog, err := c.logFile(etcd)
	if err != nil {
		return err
	}
	apiServerProc := &envtest.APIServer{Out: apiLog, Err: apiLog}
	for name, value := range opts.APIServerFlags {
		apiServerProc.Configure().Set(name, value)
	}
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: opts.AssetsDir,
		CRDDirectoryPaths:     opts.CRDDirs,
		ErrorIfCRDPathMissing: true,
		ControlPlane: envtest.ControlPlane{
			APIServer: apiServerProc,
			Etcd:      &envtest.Etcd{Out: etcdLog, Err: etcdLog},
		},
	}
	_, err = c.env.Start()
	for _, pid := range childrenNamed(etcd, apiServer) {
		c.reaper.watch(pid)
	}
	cp := c.env.ControlPlane
	c.reaper.remove(cp.APIServer.CertDir)
	c.reaper.remove(cp.Etcd.DataDir)
	c.reaper.remove(c.env.WebhookInstallOptions.LocalServingCertDir)
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	admin, err := c.env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, &rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	c.Config = admin.Config()
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return err
	}
	if c.Clientset, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	c.Client, err = client.New(c.Config, client.Options{Scheme: opts.Scheme})
	return err
}

func (c *Cluster) startNode(ctx context.Context, opts Options) error {
	f, err := c.logFile(nodeLog)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(f, time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: 1})
	// The node's own client: its informers and status writes should not
	// share a rate limiter with the tests' client. It speaks protobuf, as a
	// kubelet does (its --kube-api-content-type default): the API server's
	// work for a node's watches and status writes is then what a real
	// node's would be.
	cs, err := kubernetes.NewForConfig(ProtobufConfig(c.Config))
	if err != nil {
		return err
	}
	c.Node, err = procnode.New(procnode.Config{
		Client:   cs,
		NodeName: opts.NodeName,
		PATH:     opts.NodePATH,
		Env:      opts.NodeEnv,
		WorkRoot: filepath.Join(c.dir, "pods"),
		Log:      logr.Logger(logger),
		IdleCPU:  opts.NodeIdleCPU,
	})
	if err != nil {
		return err
	}
	nodeCtx, cancel := context.WithCancel(context.Background())
	c.nodeCancel = cancel
	c.nodeDone = make(chan error, 1)
	go func() { c.nodeDone <- c.Node.Run(nodeCtx) }()
	select {
	case <-c.Node.Ready():
		return nil
	case err := <-c.nodeDone:
		c.nodeDone <- err
		return fmt.Errorf("the process-backed node stopped before it was ready: %v", err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the process-backed node to be ready: %w", ctx.Err())
	}
}

// child is a component running as a child process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error
}

func (c *Cluster) startChild(name string, args []string) error {
	f, err := c.logFile(name)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(c.AssetsDir, name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = os.Environ()
	// Own process group, so Stop reaches whatever it spawns; killed if this
	// process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	c.reaper.watch(cmd.Process.Pid)
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	c.children = append(c.children, ch)
	return nil
}

// exited reports the first component that is no longer running.
func (c *Cluster) exited() error {
	for _, ch := range c.children {
		select {
		case <-ch.done:
			return fmt.Errorf("%s exited: %v (see %s)", ch.name, ch.err, filepath.Join(c.LogDir, ch.name+".log"))
		default:
		}
	}
	select {
	case err := <-c.nodeDone:
		c.nodeDone <- err
		return fmt.Errorf("the process-backed node stopped: %v", err)
	default:
	}
	return nil
}

// probe proves the cluster works end to end; see Start.
func (c *Cluster) probe(ctx context.Context) error {
	const ns = "agentry-cluster-probe"
	cs := c.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	owner, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		}}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "probe", Image: "probe", Command: []string{"/bin/sh", "-c", "exit 0"}}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-scheduler to place the probe pod on the node, and the node to run it", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("the probe pod failed: %+v", p.Status.ContainerStatuses)
		}
		return p.Spec.NodeName == c.Node.Name() && p.Status.Phase == corev1.PodSucceeded, nil
	}); err != nil {
		return err
	}
	background := metav1.DeletePropagationBackground
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, owner.Name, metav1.DeleteOptions{PropagationPolicy: &background}); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-controller-manager's garbage collector to remove the probe pod", func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), ignoreNotFound(err)
	}); err != nil {
		return err
	}
	// Not waited for: the namespace controller takes about 5s to remove it,
	// and every test's namespace cleanup is fire-and-forget anyway.
	return cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// waitFor checks done every 100ms until it is true, a component exits, or ctx
// ends. Errors from done end the wait, except transient API errors.
func (c *Cluster) waitFor(ctx context.Context, what string, done func() (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := done()
		if ok && err == nil {
			return nil
		}
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsTooManyRequests(err) && !apierrors.IsServerTimeout(err) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		last = err
		if err := c.exited(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Kubectl runs the cluster's kubectl as admin and returns its standard
// output; on failure the error carries its standard error.
func (c *Cluster) Kubectl(args ...string) ([]byte, error) {
	full := append([]string{"--kubeconfig=" + c.Kubeconfig, "--cache-dir=" + filepath.Join(c.dir, "kubectl-cache")}, args...)
	cmd := exec.Command(filepath.Join(c.AssetsDir, kubectl), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// LogTail returns the last lines of a component's log ("kube-scheduler",
// "kube-controller-manager", "kube-apiserver", "etcd", "procnode").
func (c *Cluster) LogTail(component string, lines int) string {
	b, err := os.ReadFile(filepath.Join(c.LogDir, component+".log"))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// LogTails returns the last lines of every component's log, for failure messages.
func (c *Cluster) LogTails(lines int) string {
	var b strings.Builder
	for _, name := range []string{nodeLog, scheduler, controllerManager, apiServer, etcd} {
		if _, err := os.Stat(filepath.Join(c.LogDir, name+".log")); err != nil {
			continue
		}
		fmt.Fprintf(&b, "--- %s (last %d lines of %s)\n%s\n", name, lines, filepath.Join(c.LogDir, name+".log"), c.LogTail(name, lines))
	}
	return b.String()
}

// Stop kills every pod process, kube-scheduler, kube-controller-manager,
// kube-apiserver and etcd, and waits for them; then it removes the cluster's
// temporary folder (LogDir too, unless it was given). It may be called more
// than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if c.nodeCancel != nil {
			c.nodeCancel()
			select {
			case err := <-c.nodeDone:
				c.nodeDone <- err
				if err != nil {
					errs = append(errs, fmt.Errorf("process-backed node: %w", err))
				}
			case <-time.After(20 * time.Second):
				errs = append(errs, errors.New("the process-backed node did not stop in 20s"))
			}
		}
		for _, ch := range c.children {
			_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGTERM)
		}
		for _, ch := range c.children {
			select {
			case <-ch.done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
				<-ch.done
			}
			_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL) // anything left in its group
		}
		if c.env != nil {
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("kube-apiserver and etcd: %w", err))
			}
		}
		for _, f := range c.logs {
			_ = f.Close()
		}
		c.reaper.disarm()
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// StartForTest starts a cluster for t, fails t at once if it cannot start (for
// example when KUBEBUILDER_ASSETS is not set), prints the components' log
// tails if t fails, and stops the cluster when t ends.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Logf("cluster started in %v (logs in %s)", time.Since(start).Round(time.Millisecond), c.LogDir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.LogTails(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	return c
}

// ProtobufConfig is a copy of config whose clients send and accept protobuf
// (JSON for the resources that have none), as kubelets, kube-scheduler and
// kube-controller-manager do.
func ProtobufConfig(config *rest.Config) *rest.Config {
	c := rest.CopyConfig(config)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}
