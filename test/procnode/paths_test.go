package procnode

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestRewrite(t *testing.T) {
	r := newRewriter([]mount{
		{containerPath: "/etc/demo", hostPath: "/pods/p/volumes/demo"},
		{containerPath: "/etc/demo/inner", hostPath: "/pods/p/volumes/inner"},
		{containerPath: "/var/run/agentry/agent/", hostPath: "/pods/p/volumes/agent"},
	})
	tests := []struct{ in, want string }{
		{"/etc/demo", "/pods/p/volumes/demo"},
		{"/etc/demo/key", "/pods/p/volumes/demo/key"},
		{"/etc/demo/inner/x", "/pods/p/volumes/inner/x"},
		{"cat /etc/demo/key; echo $FOO; exit 3", "cat /pods/p/volumes/demo/key; echo $FOO; exit 3"},
		{"--dir=/var/run/agentry/agent", "--dir=/pods/p/volumes/agent"},
		{"a:/etc/demo:b", "a:/pods/p/volumes/demo:b"},
		{`"/etc/demo"`, `"/pods/p/volumes/demo"`},
		{"/etc/demox", "/etc/demox"},
		{"x/etc/demo", "x/etc/demo"},
		{"/etc/demo.d", "/etc/demo.d"},
		{"no paths here", "no paths here"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := r.rewrite(tt.in); got != tt.want {
			t.Errorf("rewrite(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRewriteDoesNotRewriteInsertedText(t *testing.T) {
	// The host folder itself lies below another mount's container path.
	r := newRewriter([]mount{
		{containerPath: "/data", hostPath: "/tmp/pods/p/volumes/data"},
		{containerPath: "/tmp", hostPath: "/tmp/pods/p/volumes/tmp"},
	})
	if got, want := r.rewrite("/data/x /tmp/y"), "/tmp/pods/p/volumes/data/x /tmp/pods/p/volumes/tmp/y"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestImageCommand(t *testing.T) {
	tests := []struct{ image, want string }{
		{"ghcr.io/agentry-dev/agentry-agent:v0.1.0", "agentry-agent"},
		{"agentry-agent", "agentry-agent"},
		{"localhost:5000/team/agentry-agent", "agentry-agent"},
		{"localhost:5000/agentry-agent:dev", "agentry-agent"},
		{"ghcr.io/agentry-dev/agentry-agent@sha256:abc", "agentry-agent"},
		{"ghcr.io/agentry-dev/agentry-agent:v1@sha256:abc", "agentry-agent"},
	}
	for _, tt := range tests {
		if got := imageCommand(tt.image); got != tt.want {
			t.Errorf("imageCommand(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "agentry-agent")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := "/nonexistent:" + dir
	if got, err := lookPath("agentry-agent", path); err != nil || got != exe {
		t.Errorf("lookPath(agentry-agent) = %q, %v; want %q", got, err, exe)
	}
	if _, err := lookPath("data", path); err == nil {
		t.Error("lookPath found a file that is not executable")
	}
	if _, err := lookPath("missing", path); err == nil {
		t.Error("lookPath found a missing command")
	}
	if got, err := lookPath("/bin/sh", ""); err != nil || got != "/bin/sh" {
		t.Errorf("lookPath(/bin/sh) = %q, %v", got, err)
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"DIR": "/etc/demo", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	tests := []struct{ in, want string }{
		{"--dir=$(DIR)", "--dir=/etc/demo"},
		{"$(DIR)/key $(EMPTY)x", "/etc/demo/key x"},
		{"$(UNSET)", "$(UNSET)"},
		{"$$(DIR)", "$(DIR)"},
		{"$FOO ${FOO} $", "$FOO ${FOO} $"},
		{"$(DIR", "$(DIR"},
	}
	for _, tt := range tests {
		if got := expandVars(tt.in, lookup); got != tt.want {
			t.Errorf("expandVars(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPhaseOf(t *testing.T) {
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	exit := func(code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	tests := []struct {
		name        string
		inits, main []corev1.ContainerState
		want        corev1.PodPhase
	}{
		{"not started", nil, []corev1.ContainerState{waiting}, corev1.PodPending},
		{"running", nil, []corev1.ContainerState{running}, corev1.PodRunning},
		{"one of two exited", nil, []corev1.ContainerState{exit(1), running}, corev1.PodRunning},
		{"exited 0", nil, []corev1.ContainerState{exit(0)}, corev1.PodSucceeded},
		{"exited 3", nil, []corev1.ContainerState{exit(3)}, corev1.PodFailed},
		{"one of two failed", nil, []corev1.ContainerState{exit(0), exit(137)}, corev1.PodFailed},
		{"init running", []corev1.ContainerState{running}, []corev1.ContainerState{waiting}, corev1.PodPending},
		{"init failed", []corev1.ContainerState{exit(1)}, []corev1.ContainerState{waiting}, corev1.PodFailed},
		{"init done", []corev1.ContainerState{exit(0)}, []corev1.ContainerState{running}, corev1.PodRunning},
	}
	for _, tt := range tests {
		if got := phaseOf(tt.inits, tt.main); got != tt.want {
			t.Errorf("%s: phaseOf = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestWriteItemsModes(t *testing.T) {
	dir := t.TempDir()
	data := map[string][]byte{".credentials": []byte("secret"), "other": []byte("x")}
	mode := int32(0o640)
	items := []corev1.KeyToPath{{Key: ".credentials", Path: "a/.credentials"}, {Key: "other", Path: "other", Mode: &mode}}
	if err := writeItems(dir, data, items, fileMode(nil, secretFileMode), false, "secret s"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{"a/.credentials": 0o600, "other": 0o640} {
		fi, err := os.Stat(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if err := writeItems(dir, data, []corev1.KeyToPath{{Key: "missing", Path: "m"}}, 0o600, false, "secret s"); err == nil {
		t.Error("a missing key of a required secret was not an error")
	}
}
