package agent

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// MaskText is what replaces a secret in output.
const MaskText = "***"

// Masker hides secrets in every line the agent sends to the server.
type Masker struct {
	literals *strings.Replacer
	patterns []*regexp.Regexp
}

// NewMasker masks each secret value (and each line of a multi-line one) and
// every mask hint: type "regex" is a pattern, type "variable" names a job
// variable whose value is masked. Hints that do not compile, or whose pattern
// matches the empty string, are returned as bad, by index, so the caller can
// report them without echoing them.
func NewMasker(secrets []string, hints []pipelines.MaskHint, vars map[string]pipelines.VariableValue) (m *Masker, bad []int) {
	var values []string
	add := func(s string) {
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) != "" {
				values = append(values, line)
			}
		}
		if strings.TrimSpace(s) != "" {
			values = append(values, s)
		}
	}
	for _, s := range secrets {
		add(s)
	}
	m = &Masker{}
	for i, h := range hints {
		switch strings.ToLower(h.Type) {
		case "regex":
			re, err := regexp.Compile(h.Value)
			// A pattern that matches nothing would mask between every byte.
			if err != nil || re.MatchString("") {
				bad = append(bad, i)
				continue
			}
			if lit, complete := re.LiteralPrefix(); complete {
				// A plain string (Azure sends the job token as a "regex"):
				// the literal replacer is much faster than a regexp per line.
				add(lit)
				continue
			}
			m.patterns = append(m.patterns, re)
		case "variable":
			if v, ok := lookupVar(vars, h.Value); ok {
				add(v.Value)
			}
		default:
			bad = append(bad, i)
		}
	}
	// Longest first, so a secret that contains another is masked whole.
	slices.SortFunc(values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	values = slices.Compact(values)
	if len(values) > 0 {
		pairs := make([]string, 0, 2*len(values))
		for _, v := range values {
			pairs = append(pairs, v, MaskText)
		}
		m.literals = strings.NewReplacer(pairs...)
	}
	return m, bad
}

// Mask returns s with every secret replaced by MaskText.
func (m *Masker) Mask(s string) string {
	if m == nil {
		return s
	}
	if m.literals != nil {
		s = m.literals.Replace(s)
	}
	for _, re := range m.patterns {
		s = re.ReplaceAllLiteralString(s, MaskText)
	}
	return s
}

// secretValues lists the values of a job's secret variables.
func secretValues(vars map[string]pipelines.VariableValue) []string {
	var out []string
	for _, v := range vars {
		if v.IsSecret {
			out = append(out, v.Value)
		}
	}
	return out
}
