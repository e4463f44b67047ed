package server

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Demand operators, as Azure Pipelines has them: a bare capability name
// (it must exist), "-equals" and "-gtVersion". Azure's parser knows no
// others (no -notExists, no -ltVersion), so neither does this one.
const (
	demandExists     = ""
	demandEquals     = "equals"
	demandMinVersion = "gtVersion"
)

// demand is one requirement a job puts on its agent's capabilities.
type demand struct {
	Name string
	// Op is demandExists, demandEquals or demandMinVersion.
	Op string
	// Value is empty for demandExists.
	Value string
}

func (d demand) String() string {
	if d.Op == demandExists {
		return d.Name
	}
	return d.Name + " -" + d.Op + " " + d.Value
}

// parseDemand reads a demand in Azure's syntax, NAME [-OP VALUE]; operators
// are matched without case. A -gtVersion value must be a version (2 to 4
// numbers separated by dots, anything after a '-' ignored), as Azure
// compares it as one.
func parseDemand(s string) (demand, error) {
	fields := strings.Fields(s)
	switch {
	case len(s) > maxCapLen:
		return demand{}, fmt.Errorf("demand is longer than %d bytes", maxCapLen)
	case len(fields) == 0:
		return demand{}, fmt.Errorf("demand is empty")
	case strings.HasPrefix(fields[0], "-"):
		return demand{}, fmt.Errorf("demand %q: a capability name cannot start with -", s)
	case len(fields) == 1:
		return demand{Name: fields[0]}, nil
	case !strings.HasPrefix(fields[1], "-"):
		return demand{}, fmt.Errorf("demand %q: want NAME, NAME -equals VALUE or NAME -gtVersion VERSION", s)
	case len(fields) == 2:
		return demand{}, fmt.Errorf("demand %q: operator %s needs a value", s, fields[1])
	}
	// The value is everything after the operator, inner spaces kept.
	rest := strings.TrimLeftFunc(s, unicode.IsSpace)[len(fields[0]):]
	rest = strings.TrimLeftFunc(rest, unicode.IsSpace)[len(fields[1]):]
	d := demand{Name: fields[0], Value: strings.TrimSpace(rest)}
	switch op := fields[1][1:]; {
	case strings.EqualFold(op, demandEquals):
		d.Op = demandEquals
	case strings.EqualFold(op, demandMinVersion):
		d.Op = demandMinVersion
		if _, ok := parseVersion(d.Value); !ok {
			return demand{}, fmt.Errorf("demand %q: %q is not a version such as 2.182.1", s, d.Value)
		}
	default:
		return demand{}, fmt.Errorf("demand %q: operator %s is not supported; use a bare capability name, -equals or -gtVersion", s, fields[1])
	}
	return d, nil
}

// version is a .NET System.Version: 2 to 4 components, a missing one -1.
type version [4]int

// parseVersion reads a version as Azure does: the text before the first
// '-', 2 to 4 non-negative numbers separated by dots.
func parseVersion(s string) (version, bool) {
	if i := strings.IndexByte(s, '-'); i > 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return version{}, false
	}
	v := version{-1, -1, -1, -1}
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return version{}, false
		}
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return version{}, false
		}
		v[i] = int(n)
	}
	return v, true
}

func (v version) compare(o version) int {
	for i := range v {
		if v[i] != o[i] {
			if v[i] < o[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// capabilities is an agent's capabilities for matching: system and user
// ones together, a user capability winning over a system one of the same
// name, names compared without case as Azure does.
func capabilities(system, user map[string]string) map[string]string {
	caps := make(map[string]string, len(system)+len(user))
	for k, v := range system {
		caps[strings.ToLower(k)] = v
	}
	for k, v := range user {
		caps[strings.ToLower(k)] = v
	}
	return caps
}

// satisfied reports whether capabilities caps (from capabilities) meet d:
// the capability exists; for -equals its value is the same without case;
// for -gtVersion its value is a version at least the demanded one (Azure's
// "gt" is greater or equal; a capability that is not a version fails).
func (d demand) satisfied(caps map[string]string) bool {
	v, ok := caps[strings.ToLower(d.Name)]
	if !ok {
		return false
	}
	switch d.Op {
	case demandEquals:
		return strings.EqualFold(v, d.Value)
	case demandMinVersion:
		want, _ := parseVersion(d.Value)
		have, ok := parseVersion(v)
		return ok && have.compare(want) >= 0
	}
	return true
}

// satisfies reports whether an agent with caps (from capabilities) meets
// every demand. Demands that do not parse are never met.
func satisfies(caps map[string]string, demands []string) bool {
	for _, s := range demands {
		d, err := parseDemand(s)
		if err != nil || !d.satisfied(caps) {
			return false
		}
	}
	return true
}
