package controllers

import (
	"cmp"
	"fmt"
	"time"

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
	// Protected from eviction from the start: it was started for a job,
	// which it may take at any moment (see agentryv1.ProtectedLabel).
	setProtected(&pod.ObjectMeta)
	spec := &pod.Spec
	// The agent takes one job and leaves; a restarted container would find
	// its registration gone.
	spec.RestartPolicy = corev1.RestartPolicyNever
	if spec.AutomountServiceAccountToken == nil {
		spec.AutomountServiceAccountToken = ptr.To(false)
	}
	applyRestrictedDefaults(spec)
	applyNodeLossTolerations(spec)

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

// applyRestrictedDefaults fills in what the Pod Security "restricted" level
// asks for wherever the template left it unset: run as non-root, the
// runtime's default seccomp profile, no privilege escalation and no Linux
// capabilities. A template that sets any of these explicitly keeps its
// choice (e.g. runAsNonRoot: false for an image that must run as root).
func applyRestrictedDefaults(spec *corev1.PodSpec) {
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	psc := spec.SecurityContext
	if psc.RunAsNonRoot == nil && (psc.RunAsUser == nil || *psc.RunAsUser != 0) {
		psc.RunAsNonRoot = ptr.To(true)
	}
	if psc.SeccompProfile == nil {
		psc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			c := &list[i]
			if c.SecurityContext == nil {
				c.SecurityContext = &corev1.SecurityContext{}
			}
			sc := c.SecurityContext
			if sc.Privileged != nil && *sc.Privileged {
				continue // asked for explicitly; nothing here can make it restricted
			}
			if sc.AllowPrivilegeEscalation == nil {
				sc.AllowPrivilegeEscalation = ptr.To(false)
			}
			if sc.Capabilities == nil {
				sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
			}
		}
	}
}

// startProblem is why a pending pod is not running.
type startProblem struct {
	// reason is empty when nothing is wrong yet.
	reason, message string
	// fatal: the agent fails now.
	fatal bool
	// timeLeft is how long until the startup timeout.
	timeLeft time.Duration
}

// imageFailures are container waiting reasons that mean the image cannot
// be run as the template says; waiting longer does not help.
var imageFailures = map[string]string{
	"ErrImagePull":               "ImagePullFailed",
	"ImagePullBackOff":           "ImagePullFailed",
	"InvalidImageName":           "ImagePullFailed",
	"ErrImageNeverPull":          "ImagePullFailed",
	"CreateContainerConfigError": "ContainerConfigInvalid",
	"CreateContainerError":       "ContainerCreateFailed",
	"RunContainerError":          "ContainerCreateFailed",
}

// podStartProblem says whether a pod that is not running yet is in trouble:
// an image that cannot be pulled fails at once; a pod still pending after
// timeout fails, as Unschedulable when the scheduler found no node for it
// (reported, but not fatal, before that: an autoscaler may add a node).
func podStartProblem(pod *corev1.Pod, now time.Time, timeout time.Duration) startProblem {
	p := startProblem{timeLeft: max(pod.CreationTimestamp.Add(timeout).Sub(now), 0)}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range list {
			if w := cs.State.Waiting; w != nil {
				if reason, ok := imageFailures[w.Reason]; ok {
					p.reason, p.fatal = reason, true
					p.message = fmt.Sprintf("container %s: %s: %s", cs.Name, w.Reason, cmp.Or(w.Message, "no message"))
					return p
				}
			}
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			p.reason = "Unschedulable"
			p.message = cmp.Or(c.Message, "no node fits the pod")
		}
	}
	if p.timeLeft == 0 && !pod.CreationTimestamp.IsZero() {
		p.fatal = true
		if p.reason == "" {
			p.reason = "StartupTimeout"
			p.message = fmt.Sprintf("the pod did not start running within %s", timeout)
		} else {
			p.message = fmt.Sprintf("still unschedulable after %s: %s", timeout, p.message)
		}
	}
	return p
}

// podFailure says why a pod failed: the agent container's termination
// (OOMKilled, an exit code) or the pod's own reason (Evicted, NodeLost).
func podFailure(pod *corev1.Pod) (reason, message string) {
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; cs.Name == agentryv1.AgentContainerName && t != nil && t.ExitCode != 0 {
			if t.Reason == "OOMKilled" {
				return "OOMKilled", fmt.Sprintf("container %s was killed for using too much memory (exit code %d)", cs.Name, t.ExitCode)
			}
			return "PodFailed", fmt.Sprintf("container %s exited with code %d: %s", cs.Name, t.ExitCode, cmp.Or(t.Message, t.Reason, "no reason given"))
		}
	}
	return "PodFailed", cmp.Or(pod.Status.Message, pod.Status.Reason, "no reason given")
}

// nodeLossTolerationSeconds is how long an agent pod stays bound to a node
// that stopped reporting. Kubernetes' default is 300 s; an agent on a lost
// node holds a job that the server can only end or re-queue once the pod is
// gone, so agentry evicts sooner.
const nodeLossTolerationSeconds = 30

// applyNodeLossTolerations adds NoExecute tolerations for unreachable and
// not-ready nodes with a short grace, unless the template sets its own.
func applyNodeLossTolerations(spec *corev1.PodSpec) {
	for _, key := range []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady} {
		set := false
		for _, t := range spec.Tolerations {
			if t.Key == key && (t.Effect == "" || t.Effect == corev1.TaintEffectNoExecute) {
				set = true
			}
		}
		if !set {
			spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
				Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute,
				TolerationSeconds: ptr.To[int64](nodeLossTolerationSeconds),
			})
		}
	}
}
