package agent

import (
	"regexp"
	"slices"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Variable names the agent treats specially.
const (
	varAccessToken       = "system.accessToken"
	varEnableAccessToken = "system.enableAccessToken"
	envAccessToken       = "SYSTEM_ACCESSTOKEN"
)

// EnvName is the environment variable a job variable becomes, as Microsoft's
// agent names it: upper case, '.' and ' ' replaced by '_'.
func EnvName(variable string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", " ", "_").Replace(variable))
}

// validEnv reports whether name=value can be put in a process environment.
func validEnv(name, value string) bool {
	return name != "" && !strings.ContainsAny(name, "=\x00") && !strings.Contains(value, "\x00")
}

// StepEnv is the environment of a step: base (the agent's own environment
// without its AGENTRY_* settings), then every non-secret job variable under its
// EnvName. Secret variables are not exported, as in Microsoft's agent; a step
// reaches them through $(name) macros. The job token is exported as
// SYSTEM_ACCESSTOKEN only when system.enableAccessToken is "true".
func StepEnv(base []string, vars map[string]pipelines.VariableValue, jobToken string) []string {
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.HasPrefix(k, "AGENTRY_") || k == envAccessToken {
			continue
		}
		set(k, v)
	}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v := vars[n]
		if v.IsSecret || strings.EqualFold(n, varAccessToken) || !validEnv(EnvName(n), v.Value) {
			continue
		}
		set(EnvName(n), v.Value)
	}
	if accessTokenEnabled(vars) && jobToken != "" {
		set(envAccessToken, jobToken)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out
}

func accessTokenEnabled(vars map[string]pipelines.VariableValue) bool {
	v, ok := lookupVar(vars, varEnableAccessToken)
	return ok && strings.EqualFold(strings.TrimSpace(v.Value), "true")
}

// lookupVar finds a variable by name, ignoring case as the protocol does.
func lookupVar(vars map[string]pipelines.VariableValue, name string) (pipelines.VariableValue, bool) {
	if v, ok := vars[name]; ok {
		return v, true
	}
	for n, v := range vars {
		if strings.EqualFold(n, name) {
			return v, true
		}
	}
	return pipelines.VariableValue{}, false
}

var macro = regexp.MustCompile(`\$\(([^()\s]+)\)`)

// ExpandMacros replaces $(name) with the value of the job variable name
// (any case), in one pass, as task inputs are expanded. Unknown names stay
// as written. $(System.AccessToken) is never expanded: the job token must not
// reach a script file on disk.
func ExpandMacros(s string, vars map[string]pipelines.VariableValue) string {
	return macro.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.EqualFold(name, varAccessToken) {
			return m
		}
		if v, ok := lookupVar(vars, name); ok {
			return v.Value
		}
		return m
	})
}
