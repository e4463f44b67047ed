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
		{in: "Agent.OS -equals Linux", want: demand{Name: "Agent.OS", Value: "Linux", Equals: true}},
		{in: "Agent.OS -EQUALS Linux", want: demand{Name: "Agent.OS", Value: "Linux", Equals: true}},
		{in: "label -equals two  words", want: demand{Name: "label", Value: "two  words", Equals: true}},
		{in: "a-equals -equals x", want: demand{Name: "a-equals", Value: "x", Equals: true}},
		{in: "Agent.Version -gtVersion 2.182.1", wantErr: true},
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
		map[string]string{"Agent.OS": "Linux", "docker": ""},
		map[string]string{"Agent.OS": "Darwin", "gpu": "nvidia"},
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
		{[]string{"gpu -gtVersion 1"}, false},
	}
	for _, tc := range tests {
		if got := satisfies(caps, tc.demands); got != tc.want {
			t.Errorf("satisfies(%q) = %t, want %t", tc.demands, got, tc.want)
		}
	}
}
