package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// agentVolume is the pod volume that carries the agent's Secret.
const agentVolume = "agentry-agent"

// hasAgentContainer reports whether a pod template has the container the
// agent's credentials go to.
func hasAgentContainer(t *corev1.PodTemplateSpec) bool {
	for _, c := range t.Spec.Containers {
		if c.Name == agentryv1.AgentContainerName {
			return true
		}
	}
	return false
}

// agentLabels are the labels of an agent's Secret and pod.
func agentLabels(agent *agentryv1.Agent) map[string]string {
	return map[string]string{agentryv1.PoolLabel: agent.Spec.PoolName, agentryv1.AgentLabel: agent.Name}
}

// agentPod builds an agent's pod from its pool's template: named after the
// Agent, never restarted, without a service-account token unless the template
// asks for one, and with the agent's Secret mounted read-only into the agent
// container only. The caller sets the owner reference.
func agentPod(t *corev1.PodTemplateSpec, agent *agentryv1.Agent) (*corev1.Pod, error) {
	t = t.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        agent.Name,
			Namespace:   agent.Namespace,
			Labels:      t.Labels,
			Annotations: t.Annotations,
		},
		Spec: t.Spec,
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	for k, v := range agentLabels(agent) {
		pod.Labels[k] = v
	}
	spec := &pod.Spec
	// The agent takes one job and leaves; a restarted container would find
	// its registration gone.
	spec.RestartPolicy = corev1.RestartPolicyNever
	if spec.AutomountServiceAccountToken == nil {
		spec.AutomountServiceAccountToken = ptr.To(false)
	}

	// Secret files are owned by root. Without an fsGroup a non-root agent
	// can read them only if they are readable by all; with one, group read
	// is enough.
	mode := int32(0o444)
	if spec.SecurityContext != nil && spec.SecurityContext.FSGroup != nil {
		mode = 0o440
	}
	spec.Volumes = append(without(spec.Volumes, func(v corev1.Volume) bool { return v.Name == agentVolume }),
		corev1.Volume{
			Name: agentVolume,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName:  agent.Name,
				DefaultMode: ptr.To(mode),
			}},
		})

	found := false
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.Name != agentryv1.AgentContainerName {
			continue
		}
		found = true
		c.VolumeMounts = append(without(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == agentVolume || m.MountPath == agentryv1.AgentDir
		}), corev1.VolumeMount{Name: agentVolume, MountPath: agentryv1.AgentDir, ReadOnly: true})
		c.Env = append(without(c.Env, func(e corev1.EnvVar) bool { return e.Name == agentryv1.AgentDirEnv }),
			corev1.EnvVar{Name: agentryv1.AgentDirEnv, Value: agentryv1.AgentDir})
	}
	if !found {
		return nil, fmt.Errorf("the pod template has no container named %q", agentryv1.AgentContainerName)
	}
	return pod, nil
}

func without[T any](items []T, drop func(T) bool) []T {
	out := items[:0:0]
	for _, it := range items {
		if !drop(it) {
			out = append(out, it)
		}
	}
	return out
}
