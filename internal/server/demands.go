package server

import (
	"fmt"
	"strings"
	"unicode"
)

// demand is one requirement a job puts on its agent's capabilities.
type demand struct {
	Name string
	// Value is empty for a bare name, which only has to exist.
	Value string
	// Equals is true for "name -equals value".
	Equals bool
}

func (d demand) String() string {
	if d.Equals {
		return d.Name + " -equals " + d.Value
	}
	return d.Name
}

// parseDemand reads a demand in Azure's syntax. The skeleton supports a bare
// capability name (it must exist) and "name -equals value"; other operators
// (-gtVersion, …) are refused rather than silently ignored.
func parseDemand(s string) (demand, error) {
	fields := strings.Fields(s)
	switch {
	case len(s) > maxCapLen:
		return demand{}, fmt.Errorf("demand is longer than %d bytes", maxCapLen)
	case len(fields) == 0:
		return demand{}, fmt.Errorf("demand is empty")
	case len(fields) == 1:
		if strings.HasPrefix(fields[0], "-") {
			return demand{}, fmt.Errorf("demand %q: a capability name cannot start with -", s)
		}
		return demand{Name: fields[0]}, nil
	case strings.EqualFold(fields[1], "-equals") && len(fields) >= 3 && !strings.HasPrefix(fields[0], "-"):
		// The value is everything after the operator, inner spaces kept.
		rest := strings.TrimLeftFunc(s, unicode.IsSpace)[len(fields[0]):]
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)[len(fields[1]):]
		return demand{Name: fields[0], Value: strings.TrimSpace(rest), Equals: true}, nil
	case strings.HasPrefix(fields[1], "-"):
		return demand{}, fmt.Errorf("demand %q: operator %s is not supported; use a bare capability name or -equals", s, fields[1])
	}
	return demand{}, fmt.Errorf("demand %q: want NAME or NAME -equals VALUE", s)
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

// satisfies reports whether an agent with caps (from capabilities) meets
// every demand. Demands that do not parse are never met; -equals compares
// without case.
func satisfies(caps map[string]string, demands []string) bool {
	for _, s := range demands {
		d, err := parseDemand(s)
		if err != nil {
			return false
		}
		v, ok := caps[strings.ToLower(d.Name)]
		if !ok || (d.Equals && !strings.EqualFold(v, d.Value)) {
			return false
		}
	}
	return true
}
