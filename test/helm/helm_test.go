// Package helm tests the chart in charts/agentry with the real helm binary:
// lint, what `helm template` renders, and `helm install` against a real API
// server.
package helm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/test/cluster"
)

const chartDir = "../../charts/agentry"

func helmBin(t *testing.T) string {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run through `make test`, which builds helm into it")
	}
	bin := filepath.Join(assets, "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is not in KUBEBUILDER_ASSETS (%v): run `hack/tools.sh helm`", err)
	}
	return bin
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// rendered is one document of helm template's output.
type rendered struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	raw []byte
}

func render(t *testing.T, args ...string) map[string]rendered {
	t.Helper()
	out := helm(t, append([]string{"template", "agentry", chartDir, "--namespace", "agentry-system", "--include-crds"}, args...)...)
	docs := map[string]rendered{}
	dec := yaml.NewYAMLReader(bufioReader(out))
	for {
		b, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r rendered
		if err := yaml.Unmarshal(b, &r); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, b)
		}
		if r.Kind == "" {
			continue
		}
		r.raw = b
		docs[r.Kind+"/"+r.Metadata.Name] = r
	}
	return docs
}

func decode[T any](t *testing.T, r rendered) *T {
	t.Helper()
	var v T
	if err := yaml.Unmarshal(r.raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func TestLint(t *testing.T) {
	out := helm(t, "lint", "--strict", chartDir)
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint:\n%s", out)
	}
}

func TestTemplateDefaults(t *testing.T) {
	docs := render(t)
	for _, key := range []string{
		"CustomResourceDefinition/agentpools.agentry.dev", "CustomResourceDefinition/agents.agentry.dev",
		"ServiceAccount/agentry-manager", "ClusterRole/agentry-manager", "ClusterRoleBinding/agentry-manager",
		"Role/agentry-leader-election", "RoleBinding/agentry-leader-election",
		"Deployment/agentry-manager", "Service/agentry-metrics",
	} {
		if _, ok := docs[key]; !ok {
			t.Errorf("default render lacks %s", key)
		}
	}
	for _, key := range []string{"StatefulSet/agentry-server", "ServiceMonitor/agentry-manager"} {
		if _, ok := docs[key]; ok {
			t.Errorf("default render has %s, which is opt-in", key)
		}
	}

	d := decode[appsv1.Deployment](t, docs["Deployment/agentry-manager"])
	c := d.Spec.Template.Spec.Containers[0]
	if !contains(c.Args, "--leader-elect") {
		t.Errorf("manager args %q lack --leader-elect", c.Args)
	}
	if c.Image != "ghcr.io/agentry-dev/agentry-manager:0.1.0" {
		t.Errorf("manager image = %q, want the appVersion tag", c.Image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("manager security context %+v is not locked down", sc)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Requests.Cpu().IsZero() {
		t.Error("manager lacks probes or resource requests")
	}
	if d.Spec.Template.Spec.ServiceAccountName != "agentry-manager" {
		t.Errorf("manager service account = %q", d.Spec.Template.Spec.ServiceAccountName)
	}

	// The chart's ClusterRole is the one generated from the code's markers.
	role := decode[rbacv1.ClusterRole](t, docs["ClusterRole/agentry-manager"])
	b, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &generated); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 || !equalJSON(t, role.Rules, generated.Rules) {
		t.Errorf("chart ClusterRole rules differ from config/rbac/role.yaml:\n%+v\nvs\n%+v", role.Rules, generated.Rules)
	}

	// The chart's CRDs are the generated ones.
	for _, name := range []string{"agentry.dev_agentpools.yaml", "agentry.dev_agents.yaml"} {
		a, _ := os.ReadFile(filepath.Join(chartDir, "crds", name))
		g, _ := os.ReadFile(filepath.Join("../../config/crd/bases", name))
		if len(a) == 0 || !bytes.Equal(a, g) {
			t.Errorf("charts/agentry/crds/%s differs from config/crd/bases (run make manifests)", name)
		}
	}
}

func TestTemplateOptions(t *testing.T) {
	docs := render(t, "--set", "server.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
		"--set", "manager.leaderElection=false", "--set", "manager.watchNamespace=ci", "--set", "manager.replicas=2")
	ss, ok := docs["StatefulSet/agentry-server"]
	if !ok {
		t.Fatal("server.enabled=true renders no StatefulSet")
	}
	sts := decode[appsv1.StatefulSet](t, ss)
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("server StatefulSet has %d volume claim templates, want 1", len(sts.Spec.VolumeClaimTemplates))
	}
	env := sts.Spec.Template.Spec.Containers[0].Env
	if len(env) != 1 || env[0].ValueFrom == nil || env[0].ValueFrom.SecretKeyRef == nil || env[0].ValueFrom.SecretKeyRef.Name != "agentry-admin-token" {
		t.Errorf("server admin token env = %+v, want a reference to Secret agentry-admin-token", env)
	}
	if _, ok := docs["ServiceMonitor/agentry-manager"]; !ok {
		t.Error("metrics.serviceMonitor.enabled=true renders no ServiceMonitor")
	}
	if _, ok := docs["Role/agentry-leader-election"]; ok {
		t.Error("leaderElection=false still renders the leader-election Role")
	}
	d := decode[appsv1.Deployment](t, docs["Deployment/agentry-manager"])
	args := d.Spec.Template.Spec.Containers[0].Args
	if contains(args, "--leader-elect") || !contains(args, "--namespace=ci") || *d.Spec.Replicas != 2 {
		t.Errorf("manager args %q replicas %d, want no --leader-elect, --namespace=ci, 2 replicas", args, *d.Spec.Replicas)
	}
}

// TestInstall installs the chart with the real helm into a real API server
// and checks the CRDs become established and the Deployment is created.
func TestInstall(t *testing.T) {
	bin := helmBin(t)
	cl := cluster.StartForTest(t, cluster.Options{AssetsDir: os.Getenv("KUBEBUILDER_ASSETS"), LogDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, "install", "agentry", chartDir, "--namespace", "agentry-system", "--create-namespace",
		"--kubeconfig", cl.Kubeconfig, "--set", "server.enabled=true")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}

	for _, name := range []string{"agentpools.agentry.dev", "agents.agentry.dev"} {
		err := waitEstablished(ctx, cl, name)
		if err != nil {
			t.Errorf("CRD %s not established: %v", name, err)
		}
	}
	var d appsv1.Deployment
	if err := cl.Client.Get(ctx, client.ObjectKey{Namespace: "agentry-system", Name: "agentry-manager"}, &d); err != nil {
		t.Errorf("manager Deployment: %v", err)
	}
	var sts appsv1.StatefulSet
	if err := cl.Client.Get(ctx, client.ObjectKey{Namespace: "agentry-system", Name: "agentry-server"}, &sts); err != nil {
		t.Errorf("server StatefulSet: %v", err)
	}
	var sa corev1.ServiceAccount
	if err := cl.Client.Get(ctx, client.ObjectKey{Namespace: "agentry-system", Name: "agentry-manager"}, &sa); err != nil {
		t.Errorf("manager ServiceAccount: %v", err)
	}
	// The API server accepts an AgentPool against the installed CRD.
	out, err := cl.Kubectl("get", "agentpools.agentry.dev", "-A", "-o", "name")
	if err != nil {
		t.Errorf("kubectl get agentpools after install: %v: %s", err, out)
	}
}

// waitEstablished waits until the API server serves the named CRD.
func waitEstablished(ctx context.Context, cl *cluster.Cluster, name string) error {
	return poll.Until(ctx, 0, 100*time.Millisecond, func() error {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := cl.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not established yet")
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestKustomizeApply applies config/default with plain client-side
// `kubectl apply -k`, as the README tells users to.
func TestKustomizeApply(t *testing.T) {
	cl := cluster.StartForTest(t, cluster.Options{AssetsDir: os.Getenv("KUBEBUILDER_ASSETS"), LogDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := cl.Kubectl("apply", "-k", "../../config/default"); err != nil {
		t.Fatalf("kubectl apply -k config/default: %v\n%s", err, out)
	}
	err := waitEstablished(ctx, cl, "agentpools.agentry.dev")
	if err != nil {
		t.Fatalf("AgentPool CRD not established: %v", err)
	}
	var d appsv1.Deployment
	if err := cl.Client.Get(ctx, client.ObjectKey{Namespace: "agentry-system", Name: "agentry-manager"}, &d); err != nil {
		t.Errorf("manager Deployment: %v", err)
	}
	// The sample applies against the CRD it installed.
	if out, err := cl.Kubectl("apply", "-f", "../../config/samples/agentry_v1alpha1_agentpool.yaml"); err != nil {
		t.Errorf("kubectl apply of the sample pool: %v\n%s", err, out)
	}
}
