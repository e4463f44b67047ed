package benchrows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteFileRead(t *testing.T) {
	want := []Row{
		{Component: "agentry-agent", Metric: "process start → session open", Measured: "9 ms", Target: "< 100ms", Verdict: OK},
		{Component: "agentry-agent", Metric: "log throughput", Measured: "40 MB/s", Target: "≥ 50 MB/s", Verdict: Missed},
		{Component: "agentry-server", Metric: "server RSS", Measured: "120.5 MiB"},
	}
	path := filepath.Join(t.TempDir(), "rows.tsv")
	if err := WriteFile(path, want); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}
}

func TestWriteFileRefusesTabs(t *testing.T) {
	err := WriteFile(filepath.Join(t.TempDir(), "rows.tsv"), []Row{{Component: "c", Metric: "a\tb"}})
	if err == nil {
		t.Error("a metric with a tab was written")
	}
}

func TestReadMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"empty":        "",
		"wrong header": "a\tb\n",
		"four fields":  Header + "\nc\tm\t1\t\n",
		"bad verdict":  Header + "\nc\tm\t1\t< 2\tMISSED\n",
	} {
		if _, err := Read(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
