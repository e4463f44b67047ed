package pipelines

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDemand(t *testing.T) {
	tests := []struct {
		in      string
		want    Demand
		wantErr bool
	}{
		{in: "docker", want: Demand{Name: "docker"}},
		{in: "  Agent.OS   -equals  Linux ", want: Demand{Name: "Agent.OS", Op: DemandEquals, Value: "Linux"}},
		{in: "label -equals two words", want: Demand{Name: "label", Op: DemandEquals, Value: "two words"}},
		{in: "Agent.Version -gtVersion 2.182.1", want: Demand{Name: "Agent.Version", Op: DemandMinimumVersion, Value: "2.182.1"}},
		{in: "Agent.Version -GTVERSION 2.182", want: Demand{Name: "Agent.Version", Op: DemandMinimumVersion, Value: "2.182"}},
		{in: "", wantErr: true},
		{in: "-equals x", wantErr: true},
		{in: "a -equals", wantErr: true},
		{in: "a -like b*", wantErr: true},
		{in: "a b c", wantErr: true},
		{in: "Agent.Version -gtVersion latest", wantErr: true},
		{in: "label -equals two  words", want: Demand{Name: "label", Op: DemandEquals, Value: "two  words"}},
		{in: "a-equals -equals x", want: Demand{Name: "a-equals", Op: DemandEquals, Value: "x"}},
		{in: "node -gtversion 18.0-beta", want: Demand{Name: "node", Op: DemandMinimumVersion, Value: "18.0-beta"}},
		{in: "Agent.Version -gtVersion 2", wantErr: true},         // one number is not a version
		{in: "Agent.Version -gtVersion 1.2.3.4.5", wantErr: true}, // at most four numbers
		{in: "Agent.Version -ltVersion 3.0", wantErr: true},       // Azure has no -ltVersion
		{in: "docker -notExists x", wantErr: true},                // nor -notExists
	}
	for _, tt := range tests {
		got, err := ParseDemand(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseDemand(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" && !tt.wantErr {
			t.Errorf("ParseDemand(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestCapabilitiesSatisfy(t *testing.T) {
	caps := NewCapabilities(
		map[string]string{"Agent.OS": "Linux", "Agent.Version": "3.240.0", "team": "system"},
		map[string]string{"team": "ci", "docker": "", "node": "v20", "jdk": "17.0.2-tem"},
	)
	tests := []struct {
		name    string
		demands []string
		want    bool
	}{
		{name: "no demands", want: true},
		{name: "os matches without case", demands: []string{"agent.os -equals linux"}, want: true},
		{name: "other os", demands: []string{"Agent.OS -equals Windows_NT"}, want: false},
		{name: "bare name exists even when empty", demands: []string{"docker"}, want: true},
		{name: "bare name missing", demands: []string{"java"}, want: false},
		{name: "user capability wins over system", demands: []string{"team -equals ci"}, want: true},
		{name: "version high enough", demands: []string{"Agent.Version -gtVersion 2.182.1"}, want: true},
		{name: "version equal counts", demands: []string{"Agent.Version -gtVersion 3.240"}, want: true},
		{name: "version too low", demands: []string{"Agent.Version -gtVersion 3.241.0"}, want: false},
		{name: "version compares numerically", demands: []string{"Agent.Version -gtVersion 3.99.0"}, want: true},
		{name: "a missing part sorts first, as .NET's Version", demands: []string{"Agent.Version -gtVersion 3.240.0.0"}, want: false},
		{name: "a pre-release suffix is ignored", demands: []string{"Agent.Version -gtVersion 3.240.0-beta"}, want: true},
		{name: "signs are not digits", demands: []string{"Agent.Version -gtVersion +3.240"}, want: false},
		{name: "all must hold", demands: []string{"docker", "java"}, want: false},
		{name: "unparsable demand is never met", demands: []string{"docker -like d*"}, want: false},
		{name: "a value that is not a version never meets -gtVersion", demands: []string{"node -gtVersion 18.0"}, want: false},
		{name: "a vendor suffix on the capability is ignored", demands: []string{"jdk -gtVersion 17.0"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := caps.Satisfy(tt.demands); got != tt.want {
				t.Errorf("Satisfy(%q) = %v, want %v", tt.demands, got, tt.want)
			}
		})
	}
	if NewCapabilities(map[string]string{"Agent.Version": "not-a-version"}, nil).Satisfy([]string{"Agent.Version -gtVersion 1.0"}) {
		t.Error("a capability that is not a version met -gtVersion")
	}
}

func FuzzParseDemand(f *testing.F) {
	for _, s := range []string{"docker", "Agent.OS -equals Linux", "Agent.Version -gtVersion 2.182.1", "a -equals  b c "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDemand(s)
		if err != nil {
			return
		}
		again, err := ParseDemand(d.String())
		if err != nil || again != d {
			t.Fatalf("ParseDemand(%q) = %+v, but its String %q parses to %+v, %v", s, d, d.String(), again, err)
		}
	})
}
