package pipelines

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// DemandOperator is how a demand compares a capability's value.
type DemandOperator int

// Demand operators, as Azure Pipelines writes them.
const (
	// DemandExists: a bare capability name; the capability must exist.
	DemandExists DemandOperator = iota
	// DemandEquals: "name -equals value"; compared without case.
	DemandEquals
	// DemandMinimumVersion: "name -gtVersion version"; the capability must
	// be a version at least that high (Azure's DemandMinimumVersion).
	DemandMinimumVersion
)

// maxDemandLen bounds a demand; longer ones are refused, not matched.
const maxDemandLen = 1024

// Demand is one requirement a job puts on its agent's capabilities.
type Demand struct {
	Name string
	Op   DemandOperator
	// Value is empty for DemandExists.
	Value string
}

func (d Demand) String() string {
	switch d.Op {
	case DemandEquals:
		return d.Name + " -equals " + d.Value
	case DemandMinimumVersion:
		return d.Name + " -gtVersion " + d.Value
	}
	return d.Name
}

// ParseDemand reads a demand in Azure's syntax: a bare capability name,
// "name -equals value" (the value may contain spaces) or
// "name -gtVersion version".
func ParseDemand(s string) (Demand, error) {
	fields := strings.Fields(s)
	switch {
	case len(s) > maxDemandLen:
		return Demand{}, fmt.Errorf("demand is longer than %d bytes", maxDemandLen)
	case len(fields) == 0:
		return Demand{}, fmt.Errorf("demand is empty")
	case strings.HasPrefix(fields[0], "-"):
		return Demand{}, fmt.Errorf("demand %q: a capability name cannot start with -", s)
	case len(fields) == 1:
		return Demand{Name: fields[0]}, nil
	case len(fields) < 3:
		return Demand{}, fmt.Errorf("demand %q: want NAME, NAME -equals VALUE or NAME -gtVersion VERSION", s)
	}
	// The value is everything after the operator, inner spaces kept.
	rest := strings.TrimLeftFunc(s, unicode.IsSpace)[len(fields[0]):]
	rest = strings.TrimSpace(strings.TrimLeftFunc(rest, unicode.IsSpace)[len(fields[1]):])
	switch {
	case strings.EqualFold(fields[1], "-equals"):
		return Demand{Name: fields[0], Op: DemandEquals, Value: rest}, nil
	case strings.EqualFold(fields[1], "-gtVersion"):
		if _, ok := parseVersion(rest); !ok {
			return Demand{}, fmt.Errorf("demand %q: %q is not a version", s, rest)
		}
		return Demand{Name: fields[0], Op: DemandMinimumVersion, Value: rest}, nil
	}
	return Demand{}, fmt.Errorf("demand %q: operator %s is not supported; use -equals or -gtVersion", s, fields[1])
}

// Capabilities are an agent's capabilities for matching, names folded to
// lower case, as Azure compares them.
type Capabilities map[string]string

// NewCapabilities merges an agent's system and user capabilities; a user
// capability wins over a system one of the same name.
func NewCapabilities(system, user map[string]string) Capabilities {
	caps := make(Capabilities, len(system)+len(user))
	for k, v := range system {
		caps[strings.ToLower(k)] = v
	}
	for k, v := range user {
		caps[strings.ToLower(k)] = v
	}
	return caps
}

// Meets reports whether the capabilities meet d.
func (c Capabilities) Meets(d Demand) bool {
	v, ok := c[strings.ToLower(d.Name)]
	if !ok {
		return false
	}
	switch d.Op {
	case DemandEquals:
		return strings.EqualFold(v, d.Value)
	case DemandMinimumVersion:
		have, ok1 := parseVersion(v)
		want, ok2 := parseVersion(d.Value)
		return ok1 && ok2 && compareVersions(have, want) >= 0
	}
	return true
}

// Satisfy reports whether the capabilities meet every demand. A demand that
// does not parse is never met: a job must not run on an agent that cannot be
// shown to fit it.
func (c Capabilities) Satisfy(demands []string) bool {
	for _, s := range demands {
		d, err := ParseDemand(s)
		if err != nil || !c.Meets(d) {
			return false
		}
	}
	return true
}

// parseVersion reads a version as Azure (.NET's Version) does: the text
// before the first '-', 2 to 4 non-negative numbers separated by dots; a
// missing part is -1, so 3.240 sorts before 3.240.0.
func parseVersion(s string) ([]int, bool) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '-'); i > 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return nil, false
	}
	v := []int{-1, -1, -1, -1}
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return nil, false
		}
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return nil, false
		}
		v[i] = int(n)
	}
	return v, true
}

func compareVersions(a, b []int) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}
