package procnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// provider is the virtual-kubelet provider: it runs pods as local processes.
type provider struct {
	ctx       context.Context // the node's lifetime
	client    kubernetes.Interface
	log       logr.Logger
	nodeName  string
	path      string
	extraEnv  []string
	workRoot  string
	maxGrace  time.Duration
	chrt      string // when set, processes start through `chrt --idle 0`
	startTime metav1.Time

	lister corev1listers.PodLister // this node's pods as the API server has them

	mu       sync.Mutex
	pods     map[string]*podRun // by namespace/name
	notifier func(*corev1.Pod)
	closed   bool
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// NotifyPods implements node.PodNotifier: status changes are pushed, never polled.
func (p *provider) NotifyPods(_ context.Context, notifier func(*corev1.Pod)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notifier = notifier
}

func (p *provider) notify(pod *corev1.Pod) {
	p.mu.Lock()
	n := p.notifier
	p.mu.Unlock()
	if n != nil {
		n(pod)
	}
}

// CreatePod sets up the pod's private folder and starts it in the background.
func (p *provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("procnode is shutting down")
	}
	if r, ok := p.pods[key]; ok && r.pod.UID == pod.UID {
		return nil
	}
	r, err := newPodRun(p, key, pod)
	if err != nil {
		return fmt.Errorf("preparing the pod folder: %w", err)
	}
	p.pods[key] = r
	p.log.V(1).Info("Starting pod", "pod", key, "dir", r.dir)
	go r.run()
	return nil
}

// UpdatePod takes what may change on a running pod (labels, annotations);
// a container's image change is not acted on.
func (p *provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	r := p.lookup(pod.Namespace, pod.Name)
	if r == nil || r.pod.UID != pod.UID {
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pod.Labels = pod.Labels
	r.pod.Annotations = pod.Annotations
	return nil
}

// DeletePod stops the pod's processes (SIGTERM to each process group, SIGKILL
// after the grace period, capped), then removes its folder, reports the final
// status and removes the pod from the API server, as the kubelet does once its
// containers are gone. It does not wait for the processes.
func (p *provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	r, ok := p.pods[key]
	p.mu.Unlock()
	if !ok {
		return errdefs.NotFoundf("pod %s is not on this node", key)
	}
	grace := gracePeriod(pod, p.maxGrace)
	p.log.V(1).Info("Stopping pod", "pod", key, "grace", grace)
	r.stop(grace, func() { p.finalise(r) })
	return nil
}

func (p *provider) finalise(r *podRun) {
	r.markUnstarted()
	inAPI := p.inAPI(r)
	if inAPI {
		// The last status, while there is a pod to write it to: the pod
		// controller's notification handler waits for pods it does not know.
		r.notify()
	}
	if err := os.RemoveAll(r.dir); err != nil {
		p.log.Error(err, "Removing the pod folder failed", "pod", r.key)
	}
	p.mu.Lock()
	if p.pods[r.key] == r {
		delete(p.pods, r.key)
	}
	closed := p.closed
	p.mu.Unlock()
	if closed || !inAPI {
		// A pod deleted at once (grace 0) is gone already; a kubelet asks
		// the API server to remove only a pod it still sees.
		return
	}
	pod := r.snapshotSpec()
	opts := metav1.DeleteOptions{GracePeriodSeconds: new(int64), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))}
	err := p.client.CoreV1().Pods(pod.Namespace).Delete(p.ctx, pod.Name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && p.ctx.Err() == nil {
		p.log.Error(err, "Removing the stopped pod from the API server failed", "pod", r.key)
	}
	p.log.V(1).Info("Pod removed", "pod", r.key)
}

func (p *provider) inAPI(r *podRun) bool {
	if p.lister == nil {
		return true
	}
	pod, err := p.lister.Pods(r.pod.Namespace).Get(r.pod.Name)
	return err == nil && pod.UID == r.pod.UID
}

func gracePeriod(pod *corev1.Pod, limit time.Duration) time.Duration {
	seconds := int64(corev1.DefaultTerminationGracePeriodSeconds)
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		seconds = *pod.DeletionGracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		seconds = *pod.Spec.TerminationGracePeriodSeconds
	}
	return min(time.Duration(max(seconds, 0))*time.Second, limit)
}

func (p *provider) lookup(namespace, name string) *podRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[podKey(namespace, name)]
}

// GetPod returns the pod with its observed status. A pod that is being
// stopped is no longer reported, so a pod of the same name may start.
func (p *provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	r := p.lookup(namespace, name)
	if r == nil || r.isStopping() {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return r.snapshot(), nil
}

func (r *podRun) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

// GetPodStatus returns the pod's observed status.
func (p *provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod on this node.
func (p *provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	pods := make([]*corev1.Pod, 0, len(runs))
	for _, r := range runs {
		pods = append(pods, r.snapshot())
	}
	return pods, nil
}

func (p *provider) container(namespace, name, container string) (*podRun, *containerRun, error) {
	r := p.lookup(namespace, name)
	if r == nil {
		return nil, nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	for _, c := range append(append([]*containerRun{}, r.inits...), r.containers...) {
		if c.spec.Name == container {
			return r, c, nil
		}
	}
	return nil, nil, errdefs.NotFoundf("pod %s/%s has no container %q", namespace, name, container)
}

// GetContainerLogs serves `kubectl logs` from the container's log file.
func (p *provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	_, c, err := p.container(namespace, podName, containerName)
	if err != nil {
		return nil, err
	}
	return c.log.open(ctx, opts)
}

// ContainerLog returns what a container has written so far (stdout and stderr).
func (p *provider) ContainerLog(namespace, podName, containerName string) ([]byte, error) {
	_, c, err := p.container(namespace, podName, containerName)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(c.log.path)
}

// RunInContainer serves `kubectl exec`: the command runs with the container's
// environment, working folder and path rewriting. There is no TTY.
func (p *provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	r, c, err := p.container(namespace, podName, containerName)
	if err != nil {
		return err
	}
	r.mu.Lock()
	l := c.launch
	r.mu.Unlock()
	if l == nil || len(cmd) == 0 {
		return errdefs.InvalidInput("the container has not been prepared yet")
	}
	argv := make([]string, len(cmd))
	for i, a := range cmd {
		argv[i] = l.rw.rewrite(a)
	}
	path, err := lookPath(argv[0], p.path)
	if err != nil {
		return err
	}
	x := exec.CommandContext(ctx, path, argv[1:]...)
	x.Env, x.Dir = l.env, l.dir
	x.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if in := attach.Stdin(); in != nil {
		x.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		x.Stdout = out
		defer out.Close()
	}
	if errOut := attach.Stderr(); errOut != nil {
		x.Stderr = errOut
		defer errOut.Close()
	}
	return x.Run()
}

// AttachToContainer is not supported: a container's output goes to its log file.
func (p *provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("procnode does not support attach; use kubectl logs -f")
}

// PortForward is not supported: pods listen on the host's loopback directly.
func (p *provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errdefs.InvalidInput("procnode does not support port-forward; pods listen on 127.0.0.1")
}

// GetStatsSummary reports the node and its pods without resource figures.
func (p *provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	pods, _ := p.GetPods(ctx)
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.nodeName, StartTime: p.startTime}}
	for _, pod := range pods {
		s.Pods = append(s.Pods, statsv1alpha1.PodStats{
			PodRef:    statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)},
			StartTime: *pod.Status.StartTime,
		})
	}
	return s, nil
}

// GetMetricsResource reports no metrics.
func (p *provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}

// shutdown kills every pod's processes and waits for them, for at most a while.
func (p *provider) shutdown(timeout time.Duration) {
	p.mu.Lock()
	p.closed = true
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	deadline := time.After(timeout)
	for _, r := range runs {
		r.mu.Lock()
		r.stopping = true
		r.cancel()
		r.mu.Unlock()
		r.signal(syscall.SIGKILL)
	}
	for _, r := range runs {
		select {
		case <-r.finished:
		case <-deadline:
			p.log.Info("Pod processes did not exit in time", "pod", r.key)
			return
		}
	}
}
