package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDemand(t *testing.T) {
	tests := []struct {
		in      string
		want    demand
		wantErr bool
	}{
		{in: "docker", want: demand{Name: "docker"}},
		{in: "  docker  ", want: demand{Name: "docker"}},
		{in: "Agent.OS -equals Linux", want: demand{Name: "Agent.OS", Op: demandEquals, Value: "Linux"}},
		{in: "Agent.OS -EQUALS Linux", want: demand{Name: "Agent.OS", Op: demandEquals, Value: "Linux"}},
		{in: "label -equals two  words", want: demand{Name: "label", Op: demandEquals, Value: "two  words"}},
		{in: "a-equals -equals x", want: demand{Name: "a-equals", Op: demandEquals, Value: "x"}},
		{in: "Agent.Version -gtVersion 2.182.1", want: demand{Name: "Agent.Version", Op: demandMinVersion, Value: "2.182.1"}},
		{in: "node -gtversion 18.0-beta", want: demand{Name: "node", Op: demandMinVersion, Value: "18.0-beta"}},
		{in: "Agent.Version -gtVersion 2", wantErr: true},         // one number is not a version
		{in: "Agent.Version -gtVersion latest", wantErr: true},    // nor a word
		{in: "Agent.Version -gtVersion 1.2.3.4.5", wantErr: true}, // at most four numbers
		{in: "Agent.Version -ltVersion 3.0", wantErr: true},       // Azure has no -ltVersion
		{in: "docker -notExists x", wantErr: true},                // nor -notExists
		{in: "Agent.OS -equals", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "-equals x", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseDemand(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseDemand(%q) error = %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseDemand(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestSatisfies(t *testing.T) {
	caps := capabilities(
		map[string]string{"Agent.OS": "Linux", "docker": "", "Agent.Version": "4.255.0", "node": "v20"},
		map[string]string{"Agent.OS": "Darwin", "gpu": "nvidia", "java": "17.0.2-tem"},
	)
	tests := []struct {
		demands []string
		want    bool
	}{
		{nil, true},
		{[]string{"docker"}, true},
		{[]string{"DOCKER"}, true},
		{[]string{"podman"}, false},
		{[]string{"agent.os -equals darwin"}, true},
		{[]string{"Agent.OS -equals Linux"}, false}, // the user capability wins
		{[]string{"gpu -equals nvidia", "docker"}, true},
		{[]string{"gpu -equals amd", "docker"}, false},
		{[]string{"Agent.Version -gtVersion 2.182.1"}, true},
		{[]string{"Agent.Version -gtVersion 4.255.0"}, true}, // "gt" is at least
		{[]string{"Agent.Version -gtVersion 4.255"}, true},   // 4.255 < 4.255.0, as .NET has it
		{[]string{"Agent.Version -gtVersion 4.255.0.1"}, false},
		{[]string{"Agent.Version -gtVersion 10.0"}, false},
		{[]string{"java -gtVersion 17.0"}, true},  // "-tem" ignored
		{[]string{"node -gtVersion 18.0"}, false}, // v20 is not a version
		{[]string{"gpu -gtVersion 1.0"}, false},
		{[]string{"missing -gtVersion 1.0"}, false},
		{[]string{"gpu -notExists x"}, false}, // unparseable demands are never met
	}
	for _, tc := range tests {
		if got := satisfies(caps, tc.demands); got != tc.want {
			t.Errorf("satisfies(%q) = %t, want %t", tc.demands, got, tc.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want version
		ok   bool
	}{
		{"1.2", version{1, 2, -1, -1}, true},
		{"1.2.3.4", version{1, 2, 3, 4}, true},
		{"2.182.1-preview", version{2, 182, 1, -1}, true},
		{"1", version{}, false},
		{"1..2", version{}, false},
		{"1.+2", version{}, false},
		{"1.2.3.4.5", version{}, false},
		{"-1.2", version{}, false},
		{"99999999999.1", version{}, false},
	}
	for _, tc := range tests {
		got, ok := parseVersion(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseVersion(%q) = %v, %t; want %v, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
