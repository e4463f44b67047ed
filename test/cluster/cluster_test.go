package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/test/cluster"
)

// TestCluster starts one cluster and shows what the e2e suite relies on:
// pods are scheduled onto the process-backed node and run as processes with
// their Secret files and environment; deleting a pod stops its process; and
// deleting an owner removes its pods through the real garbage collector.
func TestCluster(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{CRDDirs: []string{filepath.Join("testdata", "crds")}})

	t.Run("PodRunsWithSecretVolumeAndEnv", func(t *testing.T) {
		t.Parallel()
		ns := newNamespace(t, c)
		const secretValue = "s3cret-value-7f3a"
		create(t, c, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns},
			Data:       map[string][]byte{"key": []byte(secretValue)},
		})
		pod := agentPod(ns, "failing", "sh", "-c", `cat /etc/demo/key; echo; echo $FOO; echo "pod=$POD_NAME ip=$POD_IP"; exit 3`)
		pod.Spec.Containers[0].Env = []corev1.EnvVar{
			{Name: "FOO", Value: "bar"},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "demo", MountPath: "/etc/demo", ReadOnly: true}}
		pod.Spec.Volumes = []corev1.Volume{{Name: "demo", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "demo"}}}}
		create(t, c, pod)

		got := waitForPod(t, c, ns, pod.Name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		if got.Spec.NodeName != c.Node.Name() {
			t.Errorf("pod is bound to node %q, want %q", got.Spec.NodeName, c.Node.Name())
		}
		if !hasCondition(got, corev1.PodScheduled) {
			t.Errorf("pod has no PodScheduled=True condition: %+v", got.Status.Conditions)
		}
		st := containerStatus(t, got, "agent")
		term := st.State.Terminated
		if term == nil {
			t.Fatalf("agent container is not terminated: %+v", st.State)
		}
		if term.ExitCode != 3 || term.Reason != "Error" || term.StartedAt.IsZero() || term.FinishedAt.IsZero() {
			t.Errorf("agent terminated with %+v, want exit code 3, reason Error and both times", term)
		}

		logs, err := c.Kubectl("logs", "-n", ns, pod.Name, "-c", "agent")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{secretValue, "bar", "pod=failing ip=127.0.0.1"} {
			if !strings.Contains(string(logs), want) {
				t.Errorf("kubectl logs = %q, want it to contain %q", logs, want)
			}
		}
	})

	t.Run("DeletedPodStopsItsProcess", func(t *testing.T) {
		t.Parallel()
		ns := newNamespace(t, c)
		pod := agentPod(ns, "sleeper", "sleep", "300")
		create(t, c, pod)
		pid := runningPID(t, c, ns, pod.Name)

		if err := c.Clientset.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForPodGone(t, c, ns, pod.Name)
		assertProcessGone(t, pid)
		if dirs, _ := filepath.Glob(filepath.Join(c.Node.WorkRoot(), ns+"_"+pod.Name+"_*")); len(dirs) > 0 {
			t.Errorf("the pod's private folder is still there: %v", dirs)
		}
	})

	t.Run("OwnerDeletionRemovesPod", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		ns := newNamespace(t, c)
		owner := &unstructured.Unstructured{}
		owner.SetAPIVersion("test.agentry.dev/v1")
		owner.SetKind("Widget")
		owner.SetNamespace(ns)
		owner.SetName("owner")
		if err := c.Client.Create(ctx, owner); err != nil {
			t.Fatal(err)
		}
		pod := agentPod(ns, "owned", "sleep", "300")
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "test.agentry.dev/v1", Kind: "Widget", Name: owner.GetName(), UID: owner.GetUID()}}
		create(t, c, pod)
		pid := runningPID(t, c, ns, pod.Name)

		if err := c.Client.Delete(ctx, owner, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		waitForPodGone(t, c, ns, pod.Name)
		assertProcessGone(t, pid)
	})
}

func agentPod(ns, name string, command ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "agent", Image: "ghcr.io/agentry-dev/agentry-agent:v0.1.0", Command: command,
			}},
		},
	}
}

func newNamespace(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 63 {
		name = name[:63]
	}
	create(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	t.Cleanup(func() {
		_ = c.Clientset.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

func create(t *testing.T, c *cluster.Cluster, obj client.Object) {
	t.Helper()
	if err := c.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// waitForPod returns the pod once done holds; it fails t after a minute.
func waitForPod(t *testing.T, c *cluster.Cluster, ns, name string, done func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	last := &corev1.Pod{}
	err := poll.Until(context.Background(), time.Minute, 50*time.Millisecond, func() error {
		p, err := c.Clientset.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		last = p
		if !done(p) {
			return errors.New("not there yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for pod %s/%s: %v; last seen: phase %q, node %q, statuses %+v",
			ns, name, err, last.Status.Phase, last.Spec.NodeName, last.Status.ContainerStatuses)
	}
	return last
}

func waitForPodGone(t *testing.T, c *cluster.Cluster, ns, name string) {
	t.Helper()
	err := poll.Until(context.Background(), time.Minute, 50*time.Millisecond, func() error {
		_, err := c.Clientset.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return errors.New("still there")
		}
		return err
	})
	if err != nil {
		t.Fatalf("waiting for pod %s/%s to disappear: %v", ns, name, err)
	}
}

// runningPID waits until the pod's agent container runs and returns its
// process id, taken from the containerID ("procnode://<pid>").
func runningPID(t *testing.T, c *cluster.Cluster, ns, name string) int {
	t.Helper()
	p := waitForPod(t, c, ns, name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	st := containerStatus(t, p, "agent")
	pid, err := strconv.Atoi(strings.TrimPrefix(st.ContainerID, "procnode://"))
	if err != nil || st.State.Running == nil {
		t.Fatalf("agent container status %+v: no running process id", st)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.HasPrefix(string(cmdline), "sleep\x00300") {
		t.Fatalf("process %d is not the pod's sleep: %q, %v", pid, cmdline, err)
	}
	return pid
}

func assertProcessGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d of the deleted pod still exists (kill -0: %v)", pid, err)
	}
}

func containerStatus(t *testing.T, p *corev1.Pod, name string) corev1.ContainerStatus {
	t.Helper()
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("pod %s has no status for container %q: %+v", p.Name, name, p.Status.ContainerStatuses)
	return corev1.ContainerStatus{}
}

func hasCondition(p *corev1.Pod, t corev1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
