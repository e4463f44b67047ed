package cluster_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentry-dev/agentry/test/cluster"
)

func TestScratch(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	ns := newNamespace(t, c)
	create(t, c, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: ns}, Data: map[string]string{"a": "A-VALUE", "b": "B"}})
	pod := agentPod(ns, "looper", "sh", "-c", `for i in 1 2 3 4 5 6; do echo line$i; sleep 0.3; done; cat /cfg/a; echo; pwd; echo $TMPDIR $HOME $CM_B $X; ls -la /cfg; sleep 300`)
	pod.Spec.Containers[0].WorkingDir = "/workspace"
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "CM_B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "b"}}}, {Name: "X", Value: "$(CM_B)-x:/cfg/a"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}}}
	create(t, c, pod)
	runningPIDx := waitForPod(t, c, ns, pod.Name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	_ = runningPIDx
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ctx
	out, err := c.Kubectl("logs", "-f", "--tail=2", "-n", ns, pod.Name, "--request-timeout=4s")
	t.Logf("logs -f: %q %v", out, err)
	time.Sleep(2 * time.Second)
	out, err = c.Kubectl("logs", "--tail=3", "-n", ns, pod.Name)
	t.Logf("logs tail: %q %v", out, err)
	out, err = c.Kubectl("exec", "-n", ns, pod.Name, "--", "sh", "-c", "echo exec-ok $CM_B; pwd; cat /cfg/b")
	t.Logf("exec: %q %v", out, err)
	out, err = c.Kubectl("get", "pod", "-n", ns, pod.Name, "-o", "yaml")
	t.Logf("pod: %s %v", out, err)
	out, err = c.Kubectl("get", "node", "-o", "wide")
	t.Logf("node: %s %v", out, err)
	t.Log(c.LogTail("procnode", 30))
}
