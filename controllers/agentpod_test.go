package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodStartProblem(t *testing.T) {
	created := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	waiting := func(reason string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "agent",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "details"}}}}}
	}
	unschedulable := corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
		Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available"}}}
	tests := []struct {
		name       string
		status     corev1.PodStatus
		age        time.Duration
		wantReason string
		wantFatal  bool
		wantLeft   time.Duration
	}{
		{name: "just created", status: corev1.PodStatus{Phase: corev1.PodPending}, age: time.Second, wantLeft: 4 * time.Minute},
		{name: "pulling", status: waiting("ContainerCreating"), age: time.Minute, wantLeft: 3*time.Minute + time.Second},
		{name: "image pull back-off", status: waiting("ImagePullBackOff"), age: time.Minute, wantReason: "ImagePullFailed", wantFatal: true, wantLeft: 3*time.Minute + time.Second},
		{name: "invalid image", status: waiting("InvalidImageName"), age: time.Second, wantReason: "ImagePullFailed", wantFatal: true, wantLeft: 4 * time.Minute},
		{name: "missing config map", status: waiting("CreateContainerConfigError"), age: time.Second, wantReason: "ContainerConfigInvalid", wantFatal: true, wantLeft: 4 * time.Minute},
		{name: "unschedulable, within the timeout", status: unschedulable, age: time.Minute, wantReason: "Unschedulable", wantLeft: 3*time.Minute + time.Second},
		{name: "unschedulable past the timeout", status: unschedulable, age: time.Hour, wantReason: "Unschedulable", wantFatal: true},
		{name: "pending past the timeout", status: corev1.PodStatus{Phase: corev1.PodPending}, age: 4*time.Minute + time.Second, wantReason: "StartupTimeout", wantFatal: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}, Status: tt.status}
			p := podStartProblem(pod, created.Add(tt.age), 4*time.Minute+time.Second)
			if p.reason != tt.wantReason || p.fatal != tt.wantFatal || p.timeLeft != tt.wantLeft {
				t.Errorf("podStartProblem = %+v, want reason %q fatal %v timeLeft %s", p, tt.wantReason, tt.wantFatal, tt.wantLeft)
			}
			if p.reason != "" && p.message == "" {
				t.Error("a problem without a message")
			}
		})
	}
}

func TestRestrictedDefaultsKeepExplicitChoices(t *testing.T) {
	root := int64(0)
	yes := true
	spec := &corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &root},
		Containers: []corev1.Container{
			{Name: "agent"},
			{Name: "dind", SecurityContext: &corev1.SecurityContext{Privileged: &yes}},
			{Name: "tools", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}},
		},
	}
	applyRestrictedDefaults(spec)
	if spec.SecurityContext.RunAsNonRoot != nil {
		t.Errorf("runAsNonRoot = %v on a pod that runs as uid 0 on purpose", *spec.SecurityContext.RunAsNonRoot)
	}
	if spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %v, want RuntimeDefault", spec.SecurityContext.SeccompProfile)
	}
	if sc := spec.Containers[0].SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("agent container securityContext = %+v, want restricted defaults", sc)
	}
	if sc := spec.Containers[1].SecurityContext; sc.AllowPrivilegeEscalation != nil || sc.Capabilities != nil {
		t.Errorf("privileged container was changed: %+v", sc)
	}
	if sc := spec.Containers[2].SecurityContext; len(sc.Capabilities.Add) != 1 || len(sc.Capabilities.Drop) != 0 {
		t.Errorf("container with its own capabilities was changed: %+v", sc.Capabilities)
	}
}

// An agent on a lost node is evicted after 30 s, not Kubernetes' 300 s, so
// its job is ended or re-queued sooner; a template's own choice wins.
func TestNodeLossTolerations(t *testing.T) {
	var spec corev1.PodSpec
	applyNodeLossTolerations(&spec)
	if len(spec.Tolerations) != 2 {
		t.Fatalf("tolerations = %+v, want unreachable and not-ready", spec.Tolerations)
	}
	for _, tol := range spec.Tolerations {
		if tol.Effect != corev1.TaintEffectNoExecute || tol.TolerationSeconds == nil || *tol.TolerationSeconds != nodeLossTolerationSeconds {
			t.Errorf("toleration %+v, want NoExecute for %d s", tol, nodeLossTolerationSeconds)
		}
	}

	own := int64(600)
	spec = corev1.PodSpec{Tolerations: []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, TolerationSeconds: &own}}}
	applyNodeLossTolerations(&spec)
	if len(spec.Tolerations) != 2 || *spec.Tolerations[0].TolerationSeconds != 600 || spec.Tolerations[1].Key != corev1.TaintNodeNotReady {
		t.Errorf("tolerations = %+v, want the template's unreachable toleration kept and not-ready added", spec.Tolerations)
	}
}
