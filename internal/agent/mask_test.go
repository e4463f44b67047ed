package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestMasker(t *testing.T) {
	vars := map[string]pipelines.VariableValue{"dbPassword": {Value: "pa55"}}
	hints := []pipelines.MaskHint{
		{Type: "regex", Value: `ghp_[A-Za-z0-9]{6}`},
		{Type: "variable", Value: "DBPASSWORD"},
		{Type: "regex", Value: `(`},  // does not compile
		{Type: "regex", Value: `x*`}, // matches the empty string
		{Type: "other", Value: "y"},
		{Type: "regex", Value: `plain\.literal`}, // masked as a literal
	}
	m, bad := NewMasker([]string{"s3cr3t", "s3cr3t-longer", "", "  ", "line1\nline2"}, hints, vars)
	if diff := cmp.Diff([]int{2, 3, 4}, bad); diff != "" {
		t.Errorf("bad hints (-want +got):\n%s", diff)
	}
	tests := []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"the s3cr3t is out", "the *** is out"},
		{"s3cr3t-longer", "***"},
		{"s3cr3ts3cr3t", "******"},
		{"token ghp_abc123 used", "token *** used"},
		{"password pa55!", "password ***!"},
		{"line2 alone", "*** alone"},
		{"", ""},
		{"a plain.literal b", "a *** b"},
		{"plainXliteral", "plainXliteral"},
	}
	for _, tt := range tests {
		if got := m.Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMaskerEmpty(t *testing.T) {
	m, _ := NewMasker(nil, nil, nil)
	if got := m.Mask("plain"); got != "plain" {
		t.Errorf("Mask = %q, want unchanged", got)
	}
}
