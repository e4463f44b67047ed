package controllers_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// serverPool is the pool name on the test server.
const serverPool = "default"

const adminSecret = "admin-token"

// newPool creates the admin-token Secret and an AgentPool named linux for
// srv's pool, with a short poll interval.
func newPool(t *testing.T, ns string, srv *testServer, mutate func(*agentryv1.AgentPool)) *agentryv1.AgentPool {
	t.Helper()
	ctx := context.Background()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: adminSecret, Namespace: ns},
		StringData: map[string]string{"token": srv.AdminToken},
	}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatalf("creating admin token secret: %v", err)
	}
	pool := &agentryv1.AgentPool{
		ObjectMeta: metav1.ObjectMeta{Name: "linux", Namespace: ns},
		Spec: agentryv1.AgentPoolSpec{
			Server: agentryv1.ServerSpec{
				URL:                  srv.URL,
				PoolName:             serverPool,
				CredentialsSecretRef: agentryv1.SecretKeySelector{Name: adminSecret},
			},
			Template:     agentTemplate(),
			Capabilities: map[string]string{"team": "ci"},
			MaxAgents:    ptr.To[int32](10),
			PollInterval: &metav1.Duration{Duration: 200 * time.Millisecond},
		},
	}
	if mutate != nil {
		mutate(pool)
	}
	if err := k8s.Create(ctx, pool); err != nil {
		t.Fatalf("creating agent pool: %v", err)
	}
	return pool
}

func agentTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "ci"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				{Name: "agent", Image: "ghcr.io/agentry-dev/agentry-agent:v0.1.0"},
				{Name: "sidecar", Image: "registry.example/sidecar:1"},
			},
		},
	}
}

func listAgents(t *testing.T, ns string) []agentryv1.Agent {
	t.Helper()
	var l agentryv1.AgentList
	if err := k8s.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing agents: %v", err)
	}
	return l.Items
}

func agentNames(agents []agentryv1.Agent) []string {
	var names []string
	for _, a := range agents {
		names = append(names, a.Name)
	}
	slices.Sort(names)
	return names
}

// waitForStartedAgents waits until ns has n Agents, each registered with a
// pod, and returns them.
func waitForStartedAgents(t *testing.T, ns string, n int) []agentryv1.Agent {
	t.Helper()
	var agents []agentryv1.Agent
	waitFor(t, 30*time.Second, fmt.Sprintf("%d registered agents with pods", n), func() error {
		agents = listAgents(t, ns)
		if len(agents) != n {
			return fmt.Errorf("%d agents: %v", len(agents), agentNames(agents))
		}
		for _, a := range agents {
			if a.Status.AgentID == 0 || a.Status.PodName == "" {
				return fmt.Errorf("agent %s: phase %q, agentId %d, pod %q", a.Name, a.Status.Phase, a.Status.AgentID, a.Status.PodName)
			}
		}
		return nil
	})
	return agents
}

// serverAgents lists the agents registered in the server pool, by name.
func serverAgents(t *testing.T, srv *testServer) map[string]pipelines.TaskAgent {
	t.Helper()
	ctx := context.Background()
	p, err := srv.Admin.GetPoolByName(ctx, serverPool)
	if err != nil {
		t.Fatalf("reading server pool: %v", err)
	}
	list, err := srv.Admin.ListAgents(ctx, p.ID, "")
	if err != nil {
		t.Fatalf("listing server agents: %v", err)
	}
	out := map[string]pipelines.TaskAgent{}
	for _, a := range list {
		out[a.Name] = a
	}
	return out
}

func TestAgentPoolStartsOneRegisteredAgentPerWaitingJob(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 3)
	newPool(t, ns, srv, nil)

	agents := waitForStartedAgents(t, ns, 3)
	// Several polls later a burst of 3 still has exactly 3 agents.
	holds(t, time.Second, "three agents for three waiting jobs", func() error {
		if n := len(listAgents(t, ns)); n != 3 {
			return fmt.Errorf("%d agents", n)
		}
		return nil
	})

	registered := serverAgents(t, srv)
	if diff := cmp.Diff(agentNames(agents), slices.Sorted(maps.Keys(registered))); diff != "" {
		t.Errorf("server registrations differ from Agents (-agents +server):\n%s", diff)
	}
	for _, a := range agents {
		t.Run(a.Name, func(t *testing.T) {
			reg, ok := registered[a.Name]
			if !ok {
				t.Fatalf("agent %s is not registered on the server", a.Name)
			}
			if int(a.Status.AgentID) != reg.ID {
				t.Errorf("status.agentId = %d, server id = %d", a.Status.AgentID, reg.ID)
			}
			if !metav1.IsControlledBy(&a, &agentryv1.AgentPool{ObjectMeta: metav1.ObjectMeta{UID: poolUID(t, ns)}}) {
				t.Errorf("agent %s is not controlled by its pool: %v", a.Name, a.OwnerReferences)
			}
			checkSecret(t, srv, &a, reg)
			checkPod(t, &a)
		})
	}

	waitFor(t, 10*time.Second, "pool status", func() error {
		var pool agentryv1.AgentPool
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "linux"}, &pool); err != nil {
			return err
		}
		s := pool.Status
		if s.PoolID == 0 || s.WaitingJobs != 3 || s.Agents.Total != 3 || s.ObservedGeneration != pool.Generation {
			return fmt.Errorf("status %+v", s)
		}
		for _, c := range []string{agentryv1.PoolReady, agentryv1.PoolServerReachable} {
			if !meta.IsStatusConditionTrue(s.Conditions, c) {
				return fmt.Errorf("condition %s is not true: %+v", c, s.Conditions)
			}
		}
		return nil
	})
	checkNoAdminToken(t, srv, ns)
}

func poolUID(t *testing.T, ns string) types.UID {
	t.Helper()
	var pool agentryv1.AgentPool
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "linux"}, &pool); err != nil {
		t.Fatalf("reading pool: %v", err)
	}
	return pool.UID
}

// checkSecret checks the agent's Secret holds the three agent files, that
// they describe the registration, and that its key is the registered one.
func checkSecret(t *testing.T, srv *testServer, a *agentryv1.Agent, reg pipelines.TaskAgent) {
	t.Helper()
	var secret corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: a.Namespace, Name: a.Status.SecretName}, &secret); err != nil {
		t.Fatalf("reading the agent's secret: %v", err)
	}
	if !metav1.IsControlledBy(&secret, a) {
		t.Errorf("secret is not controlled by the agent: %v", secret.OwnerReferences)
	}
	if got := slices.Sorted(maps.Keys(secret.Data)); !slices.Equal(got, []string{pipelines.AgentFile, pipelines.CredentialsFile, pipelines.RSAParamsFile}) {
		t.Errorf("secret keys = %v, want exactly the three agent files", got)
	}
	files, err := pipelines.ParseAgentFiles(secret.Data)
	if err != nil {
		t.Fatalf("the secret's agent files do not parse: %v", err)
	}
	want := pipelines.AgentSettings{
		AgentID: reg.ID, AgentName: a.Name, PoolID: int(a.Status.PoolID), PoolName: serverPool,
		ServerURL: srv.URL, WorkFolder: "_work", Ephemeral: true,
	}
	if diff := cmp.Diff(want, files.Settings); diff != "" {
		t.Errorf(".agent differs (-want +got):\n%s", diff)
	}
	if reg.Authorization == nil || reg.Authorization.PublicKey == nil {
		full, err := srv.Admin.GetAgent(context.Background(), int(a.Status.PoolID), reg.ID)
		if err != nil {
			t.Fatalf("reading the registration: %v", err)
		}
		reg = *full
	}
	if reg.Authorization == nil || reg.Authorization.PublicKey == nil {
		t.Fatalf("the server does not show agent %d's public key", reg.ID)
	}
	if files.Credentials.Scheme != "OAuth" || files.Credentials.Data.ClientID != reg.Authorization.ClientID ||
		files.Credentials.Data.AuthorizationURL != reg.Authorization.AuthorizationURL {
		t.Errorf(".credentials = %+v, registration %+v", files.Credentials, reg.Authorization)
	}
	key, err := files.Key.PrivateKey()
	if err != nil {
		t.Fatalf("private key: %v", err)
	}
	if !agentcrypto.PublicKeyOf(&key.PublicKey).Equal(*reg.Authorization.PublicKey) {
		t.Errorf("the secret's key does not match the registered public key")
	}
}

// checkPod checks the agent's pod comes from the template, never restarts,
// and has the agent's Secret in the agent container only.
func checkPod(t *testing.T, a *agentryv1.Agent) {
	t.Helper()
	var pod corev1.Pod
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: a.Namespace, Name: a.Status.PodName}, &pod); err != nil {
		t.Fatalf("reading the agent's pod: %v", err)
	}
	if pod.Name != a.Name || !metav1.IsControlledBy(&pod, a) {
		t.Errorf("pod %s owners %v, want named after and controlled by agent %s", pod.Name, pod.OwnerReferences, a.Name)
	}
	for k, v := range map[string]string{"team": "ci", agentryv1.PoolLabel: "linux", agentryv1.AgentLabel: a.Name} {
		if pod.Labels[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %q, want Never", pod.Spec.RestartPolicy)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %v, want false", pod.Spec.AutomountServiceAccountToken)
	}
	// The template sets no security context: the pod gets the Pod Security
	// "restricted" defaults.
	if psc := pod.Spec.SecurityContext; psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	for _, c := range pod.Spec.Containers {
		if sc := c.SecurityContext; sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s securityContext = %+v, want no privilege escalation and all capabilities dropped", c.Name, sc)
		}
	}
	var volume string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == a.Status.SecretName {
			volume = v.Name
		}
	}
	if volume == "" {
		t.Fatalf("no volume of secret %s in %+v", a.Status.SecretName, pod.Spec.Volumes)
	}
	for _, c := range pod.Spec.Containers {
		mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == volume && m.MountPath == "/var/run/agentry/agent" && m.ReadOnly
		})
		hasEnv := slices.Contains(c.Env, corev1.EnvVar{Name: "AGENTRY_AGENT_DIR", Value: "/var/run/agentry/agent"})
		other := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == volume })
		switch {
		case c.Name == "agent" && (!mounted || !hasEnv):
			t.Errorf("agent container: secret mounted read-only at /var/run/agentry/agent = %v, env = %v", mounted, hasEnv)
		case c.Name != "agent" && (other || hasEnv):
			t.Errorf("container %s got the agent's secret", c.Name)
		}
	}
}

// checkNoAdminToken checks the admin token is nowhere but in its own Secret.
func checkNoAdminToken(t *testing.T, srv *testServer, ns string) {
	t.Helper()
	ctx := context.Background()
	var (
		pods    corev1.PodList
		secrets corev1.SecretList
		agents  agentryv1.AgentList
		pools   agentryv1.AgentPoolList
		evs     eventsv1.EventList
		coreEvs corev1.EventList
	)
	for _, l := range []client.ObjectList{&pods, &secrets, &agents, &pools, &evs, &coreEvs} {
		if err := k8s.List(ctx, l, client.InNamespace(ns)); err != nil {
			t.Fatalf("listing %T: %v", l, err)
		}
	}
	secrets.Items = slices.DeleteFunc(secrets.Items, func(s corev1.Secret) bool { return s.Name == adminSecret })
	if strings.Contains(operatorLog.String(), srv.AdminToken) {
		t.Errorf("the admin token appears in the operator's log")
	}
	for _, l := range []any{pods, secrets, agents, pools, evs, coreEvs} {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), srv.AdminToken) {
			t.Errorf("the admin token appears in %T", l)
		}
	}
}

func TestFinishedPodDeregistersAndRemovesAgent(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 1)
	newPool(t, ns, srv, nil)
	a := waitForStartedAgents(t, ns, 1)[0]

	var pod corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.Status.PodName}, &pod); err != nil {
		t.Fatal(err)
	}
	// There is no kubelet: report the pod's end as one would.
	pod.Status.Phase = corev1.PodSucceeded
	if err := k8s.Status().Update(ctx, &pod); err != nil {
		t.Fatalf("marking the pod succeeded: %v", err)
	}

	waitAgentGone(t, srv, &a)
}

func TestDeletingAgentByHandDeregistersIt(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 1)
	// maxAgents 1 so that no replacement starts while the test watches.
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	a := waitForStartedAgents(t, ns, 1)[0]

	if err := k8s.Delete(ctx, &a); err != nil {
		t.Fatalf("deleting the agent: %v", err)
	}
	waitAgentGone(t, srv, &a)
	checkEvent(t, ns, a.Name, "Deregistered")
}

// The Secret is all an agent needs to take a job, and an agent that took
// one counts as busy: no second agent is started for the job it runs.
func TestAgentTakesAJobWithItsSecretAndCountsAsBusy(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	jobIDs := srv.queueJobs(t, 1)
	newPool(t, ns, srv, nil)
	a := waitForStartedAgents(t, ns, 1)[0]

	var secret corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.Status.SecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	files, err := pipelines.ParseAgentFiles(secret.Data)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.Status.PodName}, &pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := k8s.Status().Update(ctx, &pod); err != nil {
		t.Fatalf("marking the pod running: %v", err)
	}
	// Play the agent in the pod: its files from the Secret, nothing else.
	agent := servertest.Connect(t, files)
	job := agent.NextJob(t, 10*time.Second)
	if job.RequestID != jobIDs[0] {
		t.Fatalf("the agent got job request %d, want %d", job.RequestID, jobIDs[0])
	}

	waitFor(t, 10*time.Second, "the agent to count as busy", func() error {
		var pool agentryv1.AgentPool
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "linux"}, &pool); err != nil {
			return err
		}
		var got agentryv1.Agent
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&a), &got); err != nil {
			return err
		}
		want := agentryv1.AgentCounts{Busy: 1, Total: 1}
		if pool.Status.WaitingJobs != 0 || pool.Status.Agents != want ||
			got.Status.Phase != agentryv1.AgentRunning || got.Status.JobRequestID != job.RequestID || got.Status.StartTime == nil {
			return fmt.Errorf("pool status %+v; agent status %+v", pool.Status, got.Status)
		}
		return nil
	})
	holds(t, time.Second, "one agent for one job", func() error {
		if n := len(listAgents(t, ns)); n != 1 {
			return fmt.Errorf("%d agents", n)
		}
		return nil
	})

	if err := k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Labels[agentryv1.ProtectedLabel] != "true" || pod.Annotations[agentryv1.SafeToEvictAnnotation] != "false" {
		t.Errorf("the busy agent's pod has labels %v and annotations %v, want it protected from eviction", pod.Labels, pod.Annotations)
	}

	// Once the server has the job's result, the agent is deregistered and
	// removed with its pod, which still runs: the operator does not wait for
	// the pod to end.
	agent.Complete(t, job, pipelines.ResultSucceeded, "hello\n")
	waitAgentGone(t, srv, &a)
	holds(t, time.Second, "no agent once the queue is empty", func() error {
		if n := len(listAgents(t, ns)); n != 0 {
			return fmt.Errorf("%d agents", n)
		}
		return nil
	})
}

// registerByHand registers an agent named name with a new key on srv's
// pool, as an operator that stopped before recording it would have left it.
func registerByHand(t *testing.T, srv *testServer, name string) (poolID int, key *rsa.PrivateKey, reg *pipelines.TaskAgent) {
	t.Helper()
	ctx := context.Background()
	p, err := srv.Admin.GetPoolByName(ctx, serverPool)
	if err != nil {
		t.Fatal(err)
	}
	key, err = agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	reg, err = srv.Admin.AddAgent(ctx, p.ID, pipelines.TaskAgent{
		Name: name, Version: "3.240.0", MaxParallelism: 1, ProvisioningState: "Provisioned",
		Authorization: &pipelines.TaskAgentAuthorization{PublicKey: &pub},
	})
	if err != nil {
		t.Fatalf("registering the agent a stopped operator left: %v", err)
	}
	return p.ID, key, reg
}

// An operator that stopped between registering an agent and recording it
// finds the registration by name and takes it over with a new key, rather
// than registering a second agent.
func TestRegistrationIsTakenOverAfterACrash(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	pool := newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](0) })
	const name = "linux-crashed"
	_, _, earlier := registerByHand(t, srv, name)

	agent := &agentryv1.Agent{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{agentryv1.PoolLabel: pool.Name}},
		Spec:       agentryv1.AgentSpec{PoolName: pool.Name},
	}
	if err := controllerutil.SetControllerReference(pool, agent, scheme); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, agent); err != nil {
		t.Fatal(err)
	}
	a := waitForStartedAgents(t, ns, 1)[0]

	registered := serverAgents(t, srv)
	if len(registered) != 1 {
		t.Fatalf("server has %d agents, want the one taken over: %v", len(registered), slices.Sorted(maps.Keys(registered)))
	}
	if int(a.Status.AgentID) != earlier.ID {
		t.Errorf("status.agentId = %d, want the earlier registration %d", a.Status.AgentID, earlier.ID)
	}
	checkSecret(t, srv, &a, registered[name])
}

// stoppedOperatorAgent leaves what an operator that stopped after writing an
// agent's Secret, before recording its registration, leaves: the Agent
// (whose pool does not exist yet, so it waits), its registration on the
// server and its Secret.
func stoppedOperatorAgent(t *testing.T, ns string, srv *testServer, name string) (*agentryv1.Agent, *corev1.Secret, agentcrypto.PublicKey, *pipelines.TaskAgent) {
	t.Helper()
	ctx := context.Background()
	agent := &agentryv1.Agent{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{agentryv1.PoolLabel: "linux"},
			Finalizers: []string{agentryv1.DeregisterFinalizer}},
		Spec: agentryv1.AgentSpec{PoolName: "linux"},
	}
	if err := k8s.Create(ctx, agent); err != nil {
		t.Fatal(err)
	}
	poolID, key, reg := registerByHand(t, srv, name)
	files := pipelines.AgentFiles{
		Settings: pipelines.AgentSettings{AgentID: reg.ID, AgentName: name, PoolID: poolID, PoolName: serverPool,
			ServerURL: srv.URL, WorkFolder: "_work", Ephemeral: true},
		Credentials: pipelines.Credentials{Scheme: "OAuth", Data: pipelines.CredentialData{
			ClientID: reg.Authorization.ClientID, AuthorizationURL: reg.Authorization.AuthorizationURL}},
		Key: agentcrypto.ParametersOf(key),
	}
	data, err := files.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if err := controllerutil.SetControllerReference(agent, secret, scheme); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	return agent, secret, agentcrypto.PublicKeyOf(&key.PublicKey), reg
}

// An operator that stopped after writing an agent's Secret but before
// recording the registration takes that registration up as it is: the key a
// pod may already mount is not replaced, and no second agent is registered.
func TestRegistrationWithItsSecretIsTakenUpAsItIs(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	const name = "linux-stopped"
	_, secret, pub, earlier := stoppedOperatorAgent(t, ns, srv, name)

	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	a := waitForStartedAgents(t, ns, 1)[0]
	if int(a.Status.AgentID) != earlier.ID {
		t.Errorf("status.agentId = %d, want the earlier registration %d", a.Status.AgentID, earlier.ID)
	}
	registered := serverAgents(t, srv)
	if len(registered) != 1 {
		t.Fatalf("server has %d agents, want the one taken up: %v", len(registered), slices.Sorted(maps.Keys(registered)))
	}
	reg, err := srv.Admin.GetAgent(ctx, int(a.Status.PoolID), earlier.ID)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Authorization == nil || reg.Authorization.PublicKey == nil || !reg.Authorization.PublicKey.Equal(pub) {
		t.Errorf("the registration's key was replaced")
	}
	var after corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), &after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != secret.ResourceVersion {
		t.Errorf("the Secret was rewritten (resourceVersion %s → %s)", secret.ResourceVersion, after.ResourceVersion)
	}
	checkSecret(t, srv, &a, *reg)
}

// An operator that stopped after creating an agent's pod but before
// recording the registration reads it back from the Secret the pod mounts:
// the Agent shows its server id, and nothing is registered or rewritten.
func TestRegistrationIsReadBackFromTheSecretOfARunningPod(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	const name = "linux-podded"
	agent, secret, _, earlier := stoppedOperatorAgent(t, ns, srv, name)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{agentryv1.PoolLabel: "linux", agentryv1.AgentLabel: name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/agentry-dev/agentry-agent:v0.1.0"}}},
	}
	if err := controllerutil.SetControllerReference(agent, pod, scheme); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	a := waitForStartedAgents(t, ns, 1)[0]
	if int(a.Status.AgentID) != earlier.ID || a.Status.PodName != name {
		t.Errorf("status: agentId %d, pod %q; want %d and %q", a.Status.AgentID, a.Status.PodName, earlier.ID, name)
	}
	if registered := serverAgents(t, srv); len(registered) != 1 {
		t.Errorf("server has %d agents, want the one read back: %v", len(registered), slices.Sorted(maps.Keys(registered)))
	}
	var after corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), &after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != secret.ResourceVersion {
		t.Errorf("the Secret was rewritten (resourceVersion %s → %s)", secret.ResourceVersion, after.ResourceVersion)
	}
}

func TestDeletingPoolDeregistersItsAgents(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 2)
	pool := newPool(t, ns, srv, nil)
	agents := waitForStartedAgents(t, ns, 2)

	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatalf("deleting the pool: %v", err)
	}
	for i := range agents {
		waitAgentGone(t, srv, &agents[i])
	}
	waitFor(t, 10*time.Second, "the pool to be gone", func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), &agentryv1.AgentPool{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// waitAgentGone waits until the Agent, its Secret and pod are gone and the
// server no longer has its registration.
func waitAgentGone(t *testing.T, srv *testServer, a *agentryv1.Agent) {
	t.Helper()
	ctx := context.Background()
	key := client.ObjectKey{Namespace: a.Namespace, Name: a.Name}
	waitFor(t, 30*time.Second, "agent "+a.Name+" to be deregistered and removed", func() error {
		if _, ok := serverAgents(t, srv)[a.Name]; ok {
			return fmt.Errorf("still registered on the server")
		}
		for _, obj := range []client.Object{&agentryv1.Agent{}, &corev1.Secret{}, &corev1.Pod{}} {
			if err := k8s.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T still there (%v)", obj, err)
			}
		}
		return nil
	})
}

// checkEvent checks an event with reason was reported about the named object.
func checkEvent(t *testing.T, ns, name, reason string) {
	t.Helper()
	waitFor(t, 10*time.Second, "a "+reason+" event", func() error {
		var evs eventsv1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("%d events, none %s for %s", len(evs.Items), reason, name)
	})
}

func TestAgentPoolLimits(t *testing.T) {
	tests := []struct {
		name      string
		jobs      int
		minIdle   int32
		maxAgents int32
		want      int
	}{
		{name: "maxAgents caps a burst", jobs: 5, maxAgents: 2, want: 2},
		{name: "minIdle keeps warm agents without jobs", minIdle: 2, maxAgents: 10, want: 2},
		{name: "minIdle adds to waiting jobs", jobs: 1, minIdle: 1, maxAgents: 10, want: 2},
		{name: "maxAgents 0 starts nothing", jobs: 2, maxAgents: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNamespace(t)
			srv := startServer(t)
			srv.queueJobs(t, tt.jobs)
			newPool(t, ns, srv, func(p *agentryv1.AgentPool) {
				p.Spec.MinIdle, p.Spec.MaxAgents = tt.minIdle, ptr.To(tt.maxAgents)
			})
			waitFor(t, 10*time.Second, "the pool to observe the queue", func() error {
				var pool agentryv1.AgentPool
				if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "linux"}, &pool); err != nil {
					return err
				}
				if pool.Status.WaitingJobs != int32(tt.jobs) || !meta.IsStatusConditionTrue(pool.Status.Conditions, agentryv1.PoolReady) {
					return fmt.Errorf("status %+v", pool.Status)
				}
				return nil
			})
			if tt.want > 0 {
				waitForStartedAgents(t, ns, tt.want)
			}
			holds(t, time.Second, fmt.Sprintf("%d agents", tt.want), func() error {
				if n := len(listAgents(t, ns)); n != tt.want {
					return fmt.Errorf("%d agents", n)
				}
				return nil
			})
		})
	}
}

func TestAgentPoolValidation(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	valid := func() *agentryv1.AgentPool {
		return &agentryv1.AgentPool{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: ns},
			Spec: agentryv1.AgentPoolSpec{
				Server: agentryv1.ServerSpec{
					URL: "https://dev.azure.com/org", PoolName: "default",
					CredentialsSecretRef: agentryv1.SecretKeySelector{Name: "admin"},
				},
				Template: agentTemplate(),
			},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*agentryv1.AgentPool)
		wantErr string
	}{
		{name: "valid"},
		{name: "minIdle above maxAgents", wantErr: "minIdle must not be greater than maxAgents",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.MinIdle, p.Spec.MaxAgents = 3, ptr.To[int32](2) }},
		{name: "minIdle above the default maxAgents", wantErr: "minIdle must not be greater than maxAgents",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.MinIdle = 11 }},
		{name: "no agent container", wantErr: "template must have a container named agent",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.Template.Spec.Containers[0].Name = "runner" }},
		{name: "not an http url", wantErr: "url must be an http:// or https:// URL with a host",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.Server.URL = "ftp://example.com" }},
		{name: "not a url at all", wantErr: "url must be an http:// or https:// URL with a host",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.Server.URL = "dev.azure.com/org" }},
		{name: "unknown auth type", wantErr: "spec.server.authType",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.Server.AuthType = "Digest" }},
		{name: "name too long for a label", wantErr: "at most 63 characters",
			mutate: func(p *agentryv1.AgentPool) { p.GenerateName, p.Name = "", strings.Repeat("p", 64) }},
		{name: "negative maxAgents", wantErr: "spec.maxAgents",
			mutate: func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](-1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			if tt.mutate != nil {
				tt.mutate(p)
			}
			err := k8s.Create(ctx, p, client.DryRunAll)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		p := valid()
		if err := k8s.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		got := []any{p.Spec.MinIdle, ptr.Deref(p.Spec.MaxAgents, -1), p.Spec.PollInterval, p.Spec.Server.CredentialsSecretRef.Key,
			p.Spec.ScaleDownDelay, p.Spec.StartupTimeout, p.Spec.Server.AuthType}
		want := []any{int32(0), int32(10), &metav1.Duration{Duration: 2 * time.Second}, "token",
			&metav1.Duration{Duration: 30 * time.Second}, &metav1.Duration{Duration: 5 * time.Minute}, agentryv1.AuthPersonalAccessToken}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("defaults (-want +got):\n%s", diff)
		}
	})

	// The Azure DevOps sample is accepted as is, and its agent container
	// puts the Secret's three files into Microsoft's agent's root and runs
	// one job.
	t.Run("azure-devops sample", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join("..", "config", "samples", "azure-devops", "pool.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var p agentryv1.AgentPool
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			t.Fatalf("the sample does not decode: %v", err)
		}
		p.Namespace = ns
		if err := k8s.Create(ctx, &p, client.DryRunAll); err != nil {
			t.Fatalf("the API server rejects the sample: %v", err)
		}
		if !strings.HasPrefix(p.Spec.Server.URL, "https://dev.azure.com/") || p.Spec.Server.AuthType != agentryv1.AuthPersonalAccessToken {
			t.Errorf("server %+v, want dev.azure.com with a PAT", p.Spec.Server)
		}
		var script string
		for _, c := range p.Spec.Template.Spec.Containers {
			if c.Name == agentryv1.AgentContainerName {
				script = strings.Join(append(c.Command, c.Args...), " ")
			}
		}
		for _, want := range []string{".agent .credentials .credentials_rsaparams", `"$AGENTRY_AGENT_DIR/$f"`, "/azp/run.sh --once"} {
			if !strings.Contains(script, want) {
				t.Errorf("the agent container's command lacks %q:\n%s", want, script)
			}
		}
	})

	t.Run("sample", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join("..", "config", "samples", "agentry_v1alpha1_agentpool.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var p agentryv1.AgentPool
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			t.Fatalf("the sample does not decode: %v", err)
		}
		p.Namespace = ns
		if err := k8s.Create(ctx, &p, client.DryRunAll); err != nil {
			t.Fatalf("the API server rejects the sample: %v", err)
		}
	})
}

// Agent creates the API server refuses (here by an admission policy) are
// reported on the pool and retried: once the policy is gone, the waiting job
// gets its agent without anything else changing.
func TestRefusedAgentCreatesAreReportedAndRetried(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 1)
	binding := refuseCreates(t, ns, agentryv1.GroupVersion.Group, "agents", "false", "no agents here")
	probe := func() error {
		a := &agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-"}, Spec: agentryv1.AgentSpec{PoolName: "linux"}}
		return k8s.Create(ctx, a, client.DryRunAll)
	}
	waitFor(t, 10*time.Second, "the policy to refuse Agents", func() error {
		if probe() == nil {
			return fmt.Errorf("an Agent is still accepted")
		}
		return nil
	})

	newPool(t, ns, srv, nil)
	checkEvent(t, ns, "linux", "CreateFailed")
	if n := len(listAgents(t, ns)); n != 0 {
		t.Fatalf("%d agents exist although the API server refuses them", n)
	}

	if err := k8s.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	waitForStartedAgents(t, ns, 1)
}

// refuseCreates has the API server refuse, in namespace ns, the creates of
// resource (of API group) for which the CEL expression is false. Deleting the
// binding it returns lifts the refusal.
func refuseCreates(t *testing.T, ns, group, resource, expression, message string) *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	t.Helper()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-no-" + resource},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: expression, Message: message}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := k8s.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	return binding
}

// The pod and its Secret are created together. When the Secret's write
// fails, the pod waits for it (it cannot start without it), and a later
// reconcile writes it: the one registration is given a new key, which the
// Secret holds.
func TestPodWaitsForASecretWrittenLater(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	newPool(t, ns, srv, nil)
	binding := refuseCreates(t, ns, "", "secrets",
		fmt.Sprintf("!has(object.metadata.labels) || !(%q in object.metadata.labels)", agentryv1.AgentLabel), "no agent secrets here")
	waitFor(t, 10*time.Second, "the policy to refuse agent Secrets", func() error {
		probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-",
			Labels: map[string]string{agentryv1.AgentLabel: "probe"}}}
		if k8s.Create(ctx, probe, client.DryRunAll) == nil {
			return fmt.Errorf("an agent Secret is still accepted")
		}
		return nil
	})

	srv.queueJobs(t, 1)
	var agent agentryv1.Agent
	waitFor(t, 30*time.Second, "an agent pod without its Secret", func() error {
		agents := listAgents(t, ns)
		if len(agents) != 1 {
			return fmt.Errorf("%d agents", len(agents))
		}
		agent = agents[0]
		var pod corev1.Pod
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: agent.Name}, &pod)
	})
	holds(t, time.Second, "the Agent unregistered and without a Secret while Secrets are refused", func() error {
		var a agentryv1.Agent
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&agent), &a); err != nil {
			return err
		}
		if a.Status.AgentID != 0 || meta.IsStatusConditionTrue(a.Status.Conditions, agentryv1.AgentRegisteredCondition) {
			return fmt.Errorf("status shows agent %d registered", a.Status.AgentID)
		}
		var secret corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: agent.Name}, &secret); !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading the agent's Secret: %v", err)
		}
		return nil
	})

	if err := k8s.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	a := waitForStartedAgents(t, ns, 1)[0]
	if a.UID != agent.UID || a.Status.PodName != agent.Name {
		t.Errorf("agent %s (pod %q) started, want %s with the pod it had", a.Name, a.Status.PodName, agent.Name)
	}
	registered := serverAgents(t, srv)
	if len(registered) != 1 {
		t.Fatalf("server has %d agents, want one: %v", len(registered), slices.Sorted(maps.Keys(registered)))
	}
	if int(a.Status.AgentID) != registered[a.Name].ID {
		t.Errorf("status.agentId = %d, the server's registration is %d", a.Status.AgentID, registered[a.Name].ID)
	}
	checkSecret(t, srv, &a, registered[a.Name])
}
