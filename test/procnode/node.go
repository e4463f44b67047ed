// Package procnode is a process-backed Kubernetes node for tests: a
// virtual-kubelet provider that runs each pod's containers as local
// processes, with their environment, arguments and mounted Secret and
// ConfigMap files, and reports the pods' phases back to the API server.
//
// Every pod gets a private folder (0700) under the node's work root; each
// volume is materialised there, and every environment value, argument and
// working folder that names a mount path is rewritten to point into it. All
// pods share the host's network: their IP is 127.0.0.1. Containers are not
// restarted, whatever the pod's restart policy says.
package procnode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Config describes a process-backed node.
type Config struct {
	// Client talks to the API server; it needs rights on nodes, leases, pods,
	// pods/status, secrets, configmaps, services and events.
	Client kubernetes.Interface
	// NodeName is the Node object's name; default "procnode".
	NodeName string
	// PATH is where bare command names are looked up, and the processes' PATH
	// unless a container sets its own; default the PATH of this process.
	PATH string
	// Env is added to every process's environment ("KEY=VALUE"), before the
	// container's own variables, e.g. GOCOVERDIR.
	Env []string
	// WorkRoot holds the pods' private folders; default a temporary folder
	// that is removed when Run returns.
	WorkRoot string
	// Capacity is advertised as the node's capacity and allocatable; default
	// 16 CPUs, 64Gi memory, 110 pods.
	Capacity corev1.ResourceList
	// MaxGracePeriod caps a deleted pod's termination grace period; default 10s.
	MaxGracePeriod time.Duration
	// Log receives the node's log lines; verbosity 1 and 2 are chatty.
	Log logr.Logger
	// IdleCPU runs the pods' processes under the SCHED_IDLE policy (through
	// chrt, which must be on this process's PATH), so they get only the CPU
	// nothing else on the machine wants. On one machine this stands in for
	// worker nodes apart from the control plane.
	IdleCPU bool
}

// Node is a process-backed node. Create it with New, then call Run.
type Node struct {
	cfg   Config
	ready chan struct{}

	mu       sync.Mutex
	prov     *provider // while Run runs
	workRoot string
	chrt     string // with IdleCPU
}

// New checks the configuration and fills in defaults.
func New(cfg Config) (*Node, error) {
	if cfg.Client == nil {
		return nil, errors.New("procnode: Config.Client is required")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = "procnode"
	}
	if cfg.PATH == "" {
		cfg.PATH = os.Getenv("PATH")
	}
	if cfg.MaxGracePeriod <= 0 {
		cfg.MaxGracePeriod = 10 * time.Second
	}
	if cfg.Capacity == nil {
		cfg.Capacity = corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("16"),
			corev1.ResourceMemory:           resource.MustParse("64Gi"),
			corev1.ResourcePods:             resource.MustParse("110"),
			corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		}
	}
	if cfg.Log.GetSink() == nil {
		cfg.Log = logr.Discard()
	}
	n := &Node{cfg: cfg, ready: make(chan struct{})}
	if cfg.IdleCPU {
		chrt, err := exec.LookPath("chrt")
		if err != nil {
			return nil, fmt.Errorf("procnode: IdleCPU runs pods through chrt (util-linux): %w", err)
		}
		n.chrt = chrt
	}
	return n, nil
}

// Run registers the node, serves its pods until ctx is done, then kills every
// pod process it started and returns. It returns an error at once if the node
// cannot start.
func Run(ctx context.Context, cfg Config) error {
	n, err := New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// Name is the Node object's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Ready is closed once the Node object is registered and Ready, so the
// scheduler may place pods on it.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// WorkRoot is the folder that holds the pods' private folders, one per pod,
// named namespace_name_uid; empty before Run.
func (n *Node) WorkRoot() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.workRoot
}

// ContainerLog returns what a container of a pod on this node has written so
// far (stdout and stderr, interleaved), while the pod is on the node.
func (n *Node) ContainerLog(namespace, pod, container string) ([]byte, error) {
	n.mu.Lock()
	p := n.prov
	n.mu.Unlock()
	if p == nil {
		return nil, errors.New("procnode: the node is not running")
	}
	return p.ContainerLog(namespace, pod, container)
}

// Run registers the node and serves its pods until ctx is done; see the
// package-level Run.
func (n *Node) Run(ctx context.Context) (retErr error) {
	cfg := n.cfg
	logger := cfg.Log.WithValues("node", cfg.NodeName)
	ctx = log.WithLogger(ctx, vkLogger{logger.WithName("vk")})

	workRoot := cfg.WorkRoot
	if workRoot == "" {
		dir, err := os.MkdirTemp("", "procnode-")
		if err != nil {
			return err
		}
		workRoot = dir
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(workRoot, 0o700); err != nil {
		return err
	}
	workRoot, err := filepath.Abs(workRoot)
	if err != nil {
		return err
	}

	// The kubelet API (logs, exec) is served on a port of our own choosing,
	// advertised in the Node object, so the API server can reach it.
	cert, err := selfSignedCert(cfg.NodeName)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(loopbackIP, "0"))
	if err != nil {
		return err
	}
	defer listener.Close()
	port := int32(listener.Addr().(*net.TCPAddr).Port)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &provider{
		ctx: runCtx, client: cfg.Client, log: logger, nodeName: cfg.NodeName,
		path: cfg.PATH, extraEnv: cfg.Env, workRoot: workRoot, maxGrace: cfg.MaxGracePeriod, chrt: n.chrt,
		startTime: metav1.Now(), pods: map[string]*podRun{},
	}
	var providerCfg nodeutil.ProviderConfig
	vk, err := nodeutil.NewNode(cfg.NodeName,
		func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			providerCfg = pc
			p.lister = pc.Pods
			return p, nil, nil // nil: the naive node provider marks the node Ready once registered
		},
		nodeutil.WithClient(cfg.Client),
		// virtual-kubelet's default queues take 10 pods a second after a
		// burst of 100 tokens; a real kubelet is not paced like that.
		nodeutil.WithPodControllerConfigOverrides(func(pc *node.PodControllerConfig) error {
			pc.SyncPodsFromKubernetesRateLimiter = podQueueRateLimiter()
			pc.DeletePodsFromKubernetesRateLimiter = podQueueRateLimiter()
			pc.SyncPodStatusFromProviderRateLimiter = podQueueRateLimiter()
			return nil
		}),
		func(nc *nodeutil.NodeConfig) error {
			nc.HTTPListenAddr = listener.Addr().String() // nodeutil serves nothing itself: no TLSConfig
			nc.NodeSpec = nodeSpec(cfg, port)
			nc.NumWorkers = 4
			// Env values are resolved here, from the API server, so status.podIP
			// can be 127.0.0.1 and a Secret created just before its pod is found.
			nc.SkipDownwardAPIResolution = true
			return nil
		},
	)
	if err != nil {
		return fmt.Errorf("procnode: %w", err)
	}

	srv := &http.Server{
		Handler: api.PodHandler(api.PodHandlerConfig{
			RunInContainer:    p.RunInContainer,
			AttachToContainer: p.AttachToContainer,
			PortForward:       p.PortForward,
			GetContainerLogs:  p.GetContainerLogs,
			GetPods:           p.GetPods,
			GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
				return providerCfg.Pods.List(labels.Everything())
			},
			GetStatsSummary:    p.GetStatsSummary,
			GetMetricsResource: p.GetMetricsResource,
		}, false),
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() {
		_ = srv.Serve(tls.NewListener(listener, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}()
	defer srv.Close()

	n.mu.Lock()
	n.prov, n.workRoot = p, workRoot
	n.mu.Unlock()
	defer n.setProvider(nil)
	defer p.shutdown(10 * time.Second)

	var untaintErr error
	go func() {
		select {
		case <-vk.Ready():
		case <-vk.Done():
			return
		}
		if untaintErr = untaint(runCtx, cfg.Client, cfg.NodeName); untaintErr != nil {
			cancel()
			return
		}
		logger.Info("Node is ready", "kubeletPort", port, "workRoot", workRoot)
		close(n.ready)
	}()
	err = vk.Run(runCtx)
	switch {
	case ctx.Err() != nil:
		return nil
	case untaintErr != nil:
		return fmt.Errorf("procnode: removing the not-ready taint: %w", untaintErr)
	}
	return err
}

// untaint removes the taints the API server puts on a new node
// (node.kubernetes.io/not-ready) and that the node lifecycle controller would
// lift once the node reports Ready; that controller does not run in a test
// cluster, and without it the scheduler places nothing here.
func untaint(ctx context.Context, client kubernetes.Interface, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		keep := node.Spec.Taints[:0:0]
		for _, t := range node.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = keep
		_, err = client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (n *Node) setProvider(p *provider) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.prov = p
}

func nodeSpec(cfg Config, port int32) corev1.Node {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: cfg.NodeName,
			Labels: map[string]string{
				"type":                   "virtual-kubelet",
				"kubernetes.io/role":     "agent",
				"kubernetes.io/hostname": cfg.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     runtime.GOARCH,
			},
		},
		Status: corev1.NodeStatus{
			Phase:       corev1.NodePending,
			Capacity:    cfg.Capacity.DeepCopy(),
			Allocatable: cfg.Capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "Starting"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", ""),
			},
			// Only an IP: the API server would try to resolve a Hostname address first.
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: loopbackIP}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem: "linux", Architecture: runtime.GOARCH,
				KubeletVersion: "v0.0.0-procnode", ContainerRuntimeVersion: "procnode://0",
			},
		},
	}
}

// selfSignedCert is the kubelet API's serving certificate; the API server
// does not verify kubelets unless told a CA.
func selfSignedCert(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(loopbackIP)},
		DNSNames:     []string{"localhost", name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// vkLogger sends virtual-kubelet's log lines to logr: debug at V(2), info at
// V(1), warnings and errors always.
type vkLogger struct{ l logr.Logger }

func (v vkLogger) Debug(a ...any)            { v.l.V(2).Info(fmt.Sprint(a...)) }
func (v vkLogger) Debugf(f string, a ...any) { v.l.V(2).Info(fmt.Sprintf(f, a...)) }
func (v vkLogger) Info(a ...any)             { v.l.V(1).Info(fmt.Sprint(a...)) }
func (v vkLogger) Infof(f string, a ...any)  { v.l.V(1).Info(fmt.Sprintf(f, a...)) }
func (v vkLogger) Warn(a ...any)             { v.l.Info(fmt.Sprint(a...), "level", "warning") }
func (v vkLogger) Warnf(f string, a ...any)  { v.l.Info(fmt.Sprintf(f, a...), "level", "warning") }
func (v vkLogger) Error(a ...any)            { v.l.Error(nil, fmt.Sprint(a...)) }
func (v vkLogger) Errorf(f string, a ...any) { v.l.Error(nil, fmt.Sprintf(f, a...)) }
func (v vkLogger) Fatal(a ...any)            { v.l.Error(nil, fmt.Sprint(a...)) }
func (v vkLogger) Fatalf(f string, a ...any) { v.l.Error(nil, fmt.Sprintf(f, a...)) }
func (v vkLogger) WithField(k string, val any) log.Logger {
	return vkLogger{v.l.WithValues(k, fmt.Sprint(val))}
}
func (v vkLogger) WithError(err error) log.Logger {
	return vkLogger{v.l.WithValues("error", fmt.Sprint(err))}
}
func (v vkLogger) WithFields(f log.Fields) log.Logger {
	kv := make([]any, 0, 2*len(f))
	for _, k := range sortedKeys(f) {
		kv = append(kv, k, fmt.Sprint(f[k]))
	}
	return vkLogger{v.l.WithValues(kv...)}
}

// podQueueRateLimiter retries a failing pod with backoff, as virtual-kubelet's
// default does, without its overall limit of 10 pods a second.
func podQueueRateLimiter() workqueue.TypedRateLimiter[any] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 1000*time.Second)
}
