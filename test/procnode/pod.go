package procnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// loopbackIP is every pod's and the node's address: pods share the host's network.
	loopbackIP = "127.0.0.1"
	// containerIDPrefix makes a container status's containerID "procnode://<pid>".
	containerIDPrefix = "procnode://"
	// startErrorExitCode is what runc reports when a container's process cannot start.
	startErrorExitCode = 128
)

// podRun is one pod on this node: its private folder and its processes.
type podRun struct {
	p   *provider
	key string
	dir string // private folder, 0700: volumes/, logs/, home/, tmp/

	ctx    context.Context // cancelled when the pod is stopped
	cancel context.CancelFunc

	mu         sync.Mutex
	pod        *corev1.Pod // as received; status is built by snapshot
	startTime  metav1.Time
	inits      []*containerRun
	containers []*containerRun
	prepared   bool // volumes materialised and environment resolved
	initDone   bool
	stopping   bool
	conditions []corev1.PodCondition
	procs      sync.WaitGroup // started processes that have not been reaped

	finished chan struct{} // closed when no process of the pod runs or will run
	notifyMu sync.Mutex    // keeps status notifications in order
}

// containerRun is one container: how to launch it and what became of it.
type containerRun struct {
	spec   corev1.Container
	init   bool
	log    *logFile
	launch *launch
	state  corev1.ContainerState
	pid    int
	exited chan struct{} // closed when the process was reaped
}

// launch is a container's process, resolved against this machine.
type launch struct {
	path string // executable; empty when err is set
	argv []string
	env  []string
	dir  string
	rw   rewriter // the container's mounts, for `kubectl exec` arguments
	err  error    // why the process cannot start (reported as StartError)
}

func newPodRun(p *provider, key string, pod *corev1.Pod) (*podRun, error) {
	dir := filepath.Join(p.workRoot, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
	for _, d := range []string{dir, filepath.Join(dir, "logs"), filepath.Join(dir, "volumes"), filepath.Join(dir, "home"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	r := &podRun{
		p: p, key: key, dir: dir, ctx: ctx, cancel: cancel,
		pod:       pod.DeepCopy(),
		startTime: metav1.Now(),
		finished:  make(chan struct{}),
	}
	add := func(c corev1.Container, init bool) (*containerRun, error) {
		lf, err := createLogFile(filepath.Join(dir, "logs", c.Name+".log"))
		if err != nil {
			return nil, err
		}
		return &containerRun{
			spec: c, init: init, log: lf, exited: make(chan struct{}),
			state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		}, nil
	}
	for _, c := range pod.Spec.InitContainers {
		cr, err := add(c, true)
		if err != nil {
			return nil, err
		}
		cr.state.Waiting.Reason = "PodInitializing"
		r.inits = append(r.inits, cr)
	}
	for _, c := range pod.Spec.Containers {
		cr, err := add(c, false)
		if err != nil {
			return nil, err
		}
		r.containers = append(r.containers, cr)
	}
	return r, nil
}

// run prepares the pod, runs its init containers one by one, then its
// containers side by side, and returns when every process has been reaped.
// Containers are not restarted, whatever the restart policy says.
func (r *podRun) run() {
	defer close(r.finished)
	defer r.procs.Wait()
	if !r.prepare() {
		return
	}
	for _, c := range r.inits {
		if !r.start(c) {
			r.notify()
			return
		}
		<-c.exited
		r.mu.Lock()
		failed := c.state.Terminated.ExitCode != 0
		r.mu.Unlock()
		if failed {
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	for _, c := range r.containers {
		r.start(c)
	}
	r.notify()
}

// prepare materialises volumes and resolves every container's process. What
// may appear later (a Secret, a ConfigMap, a key) is retried with backoff, as
// the kubelet does; what cannot work fails the pod's containers at once.
func (r *podRun) prepare() bool {
	backoff := 200 * time.Millisecond
	for {
		err := r.materialise()
		if err == nil {
			r.mu.Lock()
			r.prepared = true
			r.mu.Unlock()
			return true
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			r.failAll("StartError", err.Error())
			r.notify()
			return false
		}
		r.p.log.V(1).Info("Waiting for what the pod refers to", "pod", r.key, "reason", err.Error())
		// As the kubelet does: a volume that cannot be set up yet keeps the
		// pod in ContainerCreating (the kubelet retries the mount); a
		// container's environment that names a missing object is a
		// CreateContainerConfigError.
		var mount *mountError
		if !errors.As(err, &mount) {
			r.setWaiting("CreateContainerConfigError", err.Error())
			r.notify()
		}
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (r *podRun) materialise() error {
	pod := r.snapshotSpec()
	objs := newObjectCache(r.ctx, r.p.client, pod.Namespace)
	volumes := make(map[string]string, len(pod.Spec.Volumes))
	for _, v := range pod.Spec.Volumes {
		host, err := materialiseVolume(objs, pod, v, filepath.Join(r.dir, "volumes", v.Name))
		if err != nil {
			return &mountError{fmt.Errorf("volume %q: %w", v.Name, err)}
		}
		volumes[v.Name] = host
	}
	all := append(append([]*containerRun{}, r.inits...), r.containers...)
	launches := make([]*launch, len(all))
	for i, c := range all {
		l, err := r.resolve(objs, pod, c.spec, volumes)
		if err != nil {
			return fmt.Errorf("container %q: %w", c.spec.Name, err)
		}
		launches[i] = l
	}
	r.mu.Lock()
	for i, c := range all {
		c.launch = launches[i]
	}
	r.mu.Unlock()
	return nil
}

// resolve turns a container into a process: environment, mounts, working
// folder, executable and arguments, with container paths rewritten to the
// pod's private folder.
func (r *podRun) resolve(objs *objectCache, pod *corev1.Pod, c corev1.Container, volumes map[string]string) (*launch, error) {
	env, err := containerEnv(objs, pod, c)
	if err != nil {
		return nil, err
	}
	lookup := env.lookup

	var mounts []mount
	for _, m := range c.VolumeMounts {
		host, ok := volumes[m.Name]
		if !ok {
			return nil, permanent(fmt.Errorf("volume mount %q: no such volume", m.Name))
		}
		sub := m.SubPath
		if m.SubPathExpr != "" {
			sub = expandVars(m.SubPathExpr, lookup)
		}
		if sub != "" {
			host = filepath.Join(host, filepath.Clean("/"+sub))
			if err := os.MkdirAll(host, 0o700); err != nil {
				return nil, err
			}
		}
		mounts = append(mounts, mount{containerPath: m.MountPath, hostPath: host})
	}
	rw := newRewriter(mounts)

	dir := r.dir
	if c.WorkingDir != "" {
		dir = rw.rewrite(c.WorkingDir)
		if dir == c.WorkingDir {
			// Not under a mount: give the container its own copy of that folder.
			dir = filepath.Join(r.dir, "fs", filepath.Clean("/"+c.WorkingDir))
			rw = newRewriter(append(mounts, mount{containerPath: c.WorkingDir, hostPath: dir}))
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}

	l := &launch{dir: dir, rw: rw}
	// The node's own variables hold host paths already; only the pod's are rewritten.
	l.env = append(l.env,
		"PATH="+r.p.path,
		"HOME="+filepath.Join(r.dir, "home"),
		"TMPDIR="+filepath.Join(r.dir, "tmp"),
		"HOSTNAME="+pod.Name,
	)
	l.env = append(l.env, r.p.extraEnv...)
	for _, kv := range env.vars {
		l.env = append(l.env, kv.name+"="+rw.rewrite(kv.value))
	}

	command := c.Command
	if len(command) == 0 {
		command = []string{imageCommand(c.Image)}
	}
	for _, a := range append(append([]string{}, command...), c.Args...) {
		l.argv = append(l.argv, rw.rewrite(expandVars(a, lookup)))
	}
	l.path, l.err = lookPath(l.argv[0], r.p.path)
	return l, nil
}

// start launches a container's process in its own process group; false when
// it did not start (the pod is stopping, or the process could not start).
func (r *podRun) start(c *containerRun) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return false
	}
	now := metav1.Now()
	fail := func(err error) bool {
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: startErrorExitCode, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
		}}
		c.log.end()
		close(c.exited)
		return false
	}
	l := c.launch
	if l.err != nil {
		return fail(l.err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	path, argv := l.path, l.argv
	if r.p.chrt != "" {
		// chrt sets the policy and execs the process, which keeps its pid;
		// every thread and child it makes inherits the policy.
		path, argv = r.p.chrt, append([]string{r.p.chrt, "--idle", "0", l.path}, l.argv[1:]...)
	}
	cmd := &exec.Cmd{
		Path: path, Args: argv, Env: l.env, Dir: l.dir,
		Stdout: pw, Stderr: pw, // one pipe keeps stdout and stderr in order, as `kubectl logs` shows them
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	err = cmd.Start()
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		return fail(err)
	}
	c.pid = cmd.Process.Pid
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	r.p.log.V(1).Info("Started container", "pod", r.key, "container", c.spec.Name, "pid", c.pid)

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(c.log, pr)
	}()
	r.procs.Add(1)
	go func() {
		defer r.procs.Done()
		r.p.wait(cmd)
		// A container ends with its main process: whatever it left behind goes too.
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		select {
		case <-copied:
		case <-time.After(2 * time.Second): // a process that left the group still holds the pipe
			_ = pr.Close()
			<-copied
		}
		_ = pr.Close()
		c.log.end()
		r.exited(c, cmd.ProcessState, now)
	}()
	return true
}

func (r *podRun) exited(c *containerRun, ps *os.ProcessState, startedAt metav1.Time) {
	t := &corev1.ContainerStateTerminated{
		StartedAt: startedAt, FinishedAt: metav1.Now(), ContainerID: containerIDPrefix + strconv.Itoa(c.pid),
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Signal = int32(ws.Signal())
		t.ExitCode = 128 + t.Signal
	} else {
		t.ExitCode = int32(ps.ExitCode())
	}
	t.Reason = "Completed"
	if t.ExitCode != 0 {
		t.Reason = "Error"
	}
	r.mu.Lock()
	c.state = corev1.ContainerState{Terminated: t}
	r.mu.Unlock()
	close(c.exited)
	r.p.log.V(1).Info("Container exited", "pod", r.key, "container", c.spec.Name, "pid", c.pid, "exitCode", t.ExitCode,
		"cpu", (ps.UserTime() + ps.SystemTime()).String())
	r.notify()
}

// stop ends the pod: SIGTERM to every process group now, SIGKILL after the
// grace period; then the pod is finalised. It returns at once.
func (r *podRun) stop(grace time.Duration, then func()) {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return
	}
	r.stopping = true
	r.cancel()
	r.mu.Unlock()
	r.signal(syscall.SIGTERM)
	go func() {
		select {
		case <-r.finished:
		case <-time.After(grace):
			r.signal(syscall.SIGKILL)
			<-r.finished
		}
		then()
	}()
}

// signal sends sig to the process group of every running container.
func (r *podRun) signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range append(append([]*containerRun{}, r.inits...), r.containers...) {
		if c.state.Running != nil {
			_ = syscall.Kill(-c.pid, sig)
		}
	}
}

// markUnstarted gives containers that never ran the terminal state the
// kubelet reports for them, so the pod's last status is terminal throughout.
func (r *podRun) markUnstarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := metav1.Now()
	for _, c := range append(append([]*containerRun{}, r.inits...), r.containers...) {
		if c.state.Waiting != nil {
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "The pod was deleted before the container started",
				StartedAt: now, FinishedAt: now,
			}}
			c.log.end()
		}
	}
}

func (r *podRun) setWaiting(reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range append(append([]*containerRun{}, r.inits...), r.containers...) {
		if c.state.Waiting != nil {
			c.state.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: message}
		}
	}
}

func (r *podRun) failAll(reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := metav1.Now()
	for _, c := range append(append([]*containerRun{}, r.inits...), r.containers...) {
		if c.state.Waiting != nil {
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: startErrorExitCode, Reason: reason, Message: message, StartedAt: now, FinishedAt: now,
			}}
			c.log.end()
		}
	}
}

// notify hands the pod's current status to the pod controller.
func (r *podRun) notify() {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	r.p.notify(r.snapshot())
}

func (r *podRun) snapshotSpec() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pod.DeepCopy()
}

// snapshot is the pod with the status this node observes.
func (r *podRun) snapshot() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	pod := r.pod.DeepCopy()
	st := &pod.Status
	st.HostIP, st.PodIP = loopbackIP, loopbackIP
	st.HostIPs = []corev1.HostIP{{IP: loopbackIP}}
	st.PodIPs = []corev1.PodIP{{IP: loopbackIP}}
	st.StartTime = &r.startTime
	st.Reason, st.Message = "", ""

	initStates := make([]corev1.ContainerState, len(r.inits))
	st.InitContainerStatuses = nil
	for i, c := range r.inits {
		initStates[i] = c.state
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
	}
	states := make([]corev1.ContainerState, len(r.containers))
	st.ContainerStatuses = nil
	allReady := len(r.containers) > 0
	for i, c := range r.containers {
		states[i] = c.state
		s := c.status()
		allReady = allReady && s.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, s)
	}
	st.Phase = phaseOf(initStates, states)

	initialized := r.initDone || len(r.inits) == 0
	r.setCondition(corev1.PodReadyToStartContainers, r.prepared)
	r.setCondition(corev1.PodInitialized, initialized)
	r.setCondition(corev1.ContainersReady, allReady)
	r.setCondition(corev1.PodReady, allReady)
	conds := make([]corev1.PodCondition, 0, len(st.Conditions)+len(r.conditions))
	for _, c := range st.Conditions {
		if findCondition(r.conditions, c.Type) < 0 {
			conds = append(conds, c) // PodScheduled, set by the scheduler
		}
	}
	st.Conditions = append(conds, r.conditions...)
	return pod
}

func (r *podRun) setCondition(t corev1.PodConditionType, ok bool) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	if i := findCondition(r.conditions, t); i >= 0 {
		if r.conditions[i].Status != status {
			r.conditions[i].Status = status
			r.conditions[i].LastTransitionTime = metav1.Now()
		}
		return
	}
	r.conditions = append(r.conditions, corev1.PodCondition{Type: t, Status: status, LastTransitionTime: metav1.Now()})
}

func findCondition(conds []corev1.PodCondition, t corev1.PodConditionType) int {
	for i, c := range conds {
		if c.Type == t {
			return i
		}
	}
	return -1
}

func (c *containerRun) status() corev1.ContainerStatus {
	s := corev1.ContainerStatus{
		Name:    c.spec.Name,
		Image:   c.spec.Image,
		ImageID: c.spec.Image,
		State:   *c.state.DeepCopy(),
	}
	if c.pid != 0 {
		s.ContainerID = containerIDPrefix + strconv.Itoa(c.pid)
	}
	started := c.state.Running != nil
	s.Started = &started
	s.Ready = started && !c.init
	return s
}

// phaseOf is the pod phase for its containers' states under restart policy
// Never: init containers must all succeed, in order; the pod runs while any
// container runs and ends Succeeded only when every container exited 0.
func phaseOf(inits, containers []corev1.ContainerState) corev1.PodPhase {
	for _, s := range inits {
		switch {
		case s.Terminated != nil && s.Terminated.ExitCode != 0:
			return corev1.PodFailed
		case s.Terminated == nil:
			return corev1.PodPending
		}
	}
	running, terminated, failed := 0, 0, 0
	for _, s := range containers {
		switch {
		case s.Running != nil:
			running++
		case s.Terminated != nil:
			terminated++
			if s.Terminated.ExitCode != 0 {
				failed++
			}
		}
	}
	switch {
	case len(containers) > 0 && terminated == len(containers) && failed == 0:
		return corev1.PodSucceeded
	case len(containers) > 0 && terminated == len(containers):
		return corev1.PodFailed
	case running > 0:
		return corev1.PodRunning
	default:
		return corev1.PodPending
	}
}

// mountError is a volume that cannot be set up yet.
type mountError struct{ err error }

func (e *mountError) Error() string { return e.err.Error() }
func (e *mountError) Unwrap() error { return e.err }

// permanentError marks what retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

// envVar keeps the order in which a container's variables were defined.
type envVar struct{ name, value string }

type containerEnvVars struct {
	vars  []envVar
	index map[string]int
}

func (e *containerEnvVars) set(name, value string) {
	if i, ok := e.index[name]; ok {
		e.vars[i].value = value
		return
	}
	e.index[name] = len(e.vars)
	e.vars = append(e.vars, envVar{name, value})
}

func (e *containerEnvVars) lookup(name string) (string, bool) {
	i, ok := e.index[name]
	if !ok {
		return "", false
	}
	return e.vars[i].value, true
}

// containerEnv resolves envFrom, then env (which wins), as the kubelet does.
func containerEnv(objs *objectCache, pod *corev1.Pod, c corev1.Container) (*containerEnvVars, error) {
	env := &containerEnvVars{index: map[string]int{}}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.SecretRef != nil:
			s, err := objs.secret(from.SecretRef.Name, from.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			data = secretData(s)
		case from.ConfigMapRef != nil:
			cm, err := objs.configMap(from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			if cm != nil {
				data = cm.Data
			}
		}
		for _, k := range sortedKeys(data) {
			env.set(from.Prefix+k, data[k])
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			env.set(v.Name, expandVars(v.Value, env.lookup))
			continue
		}
		value, ok, err := envValueFrom(objs, pod, v.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %q: %w", v.Name, err)
		}
		if ok {
			env.set(v.Name, value)
		}
	}
	return env, nil
}

func envValueFrom(objs *objectCache, pod *corev1.Pod, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := fieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := objs.secret(ref.Name, ref.Optional)
		if err != nil {
			return "", false, err
		}
		v, ok := secretData(s)[ref.Key]
		if !ok && !isOptional(ref.Optional) {
			return "", false, fmt.Errorf("key %q not found in secret %q", ref.Key, ref.Name)
		}
		return v, ok, nil
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := objs.configMap(ref.Name, ref.Optional)
		if err != nil {
			return "", false, err
		}
		var v string
		ok := false
		if cm != nil {
			v, ok = cm.Data[ref.Key]
		}
		if !ok && !isOptional(ref.Optional) {
			return "", false, fmt.Errorf("key %q not found in configmap %q", ref.Key, ref.Name)
		}
		return v, ok, nil
	default:
		return "", false, permanent(errors.New("only fieldRef, secretKeyRef and configMapKeyRef are supported"))
	}
}

// fieldValue answers the downward API's field paths.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return loopbackIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if rest, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(rest, "']") {
			return m[strings.TrimSuffix(rest, "']")], nil
		}
	}
	return "", permanent(fmt.Errorf("field path %q is not supported", path))
}

func isOptional(b *bool) bool { return b != nil && *b }

// wait waits for cmd's process. With IdleCPU it waits on a thread that runs
// under SCHED_IDLE, as the pods do, while it waits. Reaping a process makes
// the kernel drop the process's /proc entries, and with the pods under
// SCHED_IDLE that has spun: in one burst of several this process used
// seconds of CPU in waitid → release_task → d_invalidate → d_walk (perf
// record). At the pods' priority that takes no CPU the rest of the machine
// wants.
//
// The thread is given its policy back and unlocked, never left to end with
// the goroutine (as a goroutine that exits locked would): a child started
// from a thread that ends gets its Pdeathsig, SIGKILL. Tried, that killed
// other pods' processes.
func (p *provider) wait(cmd *exec.Cmd) {
	if p.chrt == "" {
		_ = cmd.Wait()
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0); err != nil {
		_ = cmd.Wait()
		return
	}
	_ = cmd.Wait()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}, 0); err != nil {
		p.log.Error(err, "Could not give a waiting thread its scheduling policy back; it serves other goroutines at idle priority")
	}
}
