package procnode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// mount maps a path as the container sees it to the folder on this machine
// that stands in for it.
type mount struct {
	containerPath string
	hostPath      string
}

// rewriter replaces container paths with host paths inside strings.
type rewriter []mount

// newRewriter orders mounts longest container path first, so /a/b wins over /a.
func newRewriter(mounts []mount) rewriter {
	r := make(rewriter, 0, len(mounts))
	for _, m := range mounts {
		m.containerPath = strings.TrimRight(filepath.Clean(m.containerPath), "/")
		if m.containerPath == "" || m.containerPath == "." {
			continue // a mount at "/" would swallow every path; the process would not run anyway
		}
		r = append(r, m)
	}
	sort.SliceStable(r, func(i, j int) bool { return len(r[i].containerPath) > len(r[j].containerPath) })
	return r
}

// rewrite replaces every path token that is a mount path, or lies below one,
// with the matching host path. A token starts at the beginning of s or after a
// character that cannot be part of a path (space, '=', ':', ';', quotes, ...),
// so "cat /etc/demo/key" and "--dir=/etc/demo" are rewritten, while
// "/etc/demox" and "x/etc/demo" are not. One left-to-right pass never
// rewrites text it has already inserted.
func (r rewriter) rewrite(s string) string {
	if len(r) == 0 || !strings.Contains(s, "/") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '/' && (i == 0 || !isPathChar(s[i-1])) {
			if m, ok := r.match(s[i:]); ok {
				b.WriteString(m.hostPath)
				i += len(m.containerPath)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func (r rewriter) match(s string) (mount, bool) {
	for _, m := range r {
		if !strings.HasPrefix(s, m.containerPath) {
			continue
		}
		rest := s[len(m.containerPath):]
		if rest == "" || rest[0] == '/' || !isPathChar(rest[0]) {
			return m, true
		}
	}
	return mount{}, false
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '/' || c == '.' || c == '_' || c == '-' || c == '~' || c == '+' || c == '@'
}

// imageCommand names the executable for a container without a command: the
// image's last path element without tag or digest
// ("ghcr.io/agentry-dev/agentry-agent:v0.1.0" → "agentry-agent").
func imageCommand(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, "/"); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.Index(image, ":"); i >= 0 {
		image = image[:i]
	}
	return image
}

// errNotFound marks an executable that is not on the node's PATH.
var errNotFound = errors.New("executable file not found")

// lookPath finds a bare command name in the colon-separated path list; a name
// with a slash is returned as it is.
func lookPath(name, path string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty command", errNotFound)
	}
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q on PATH %q", errNotFound, name, path)
}

// expandVars resolves $(VAR) references as the kubelet does: a reference to
// a defined variable is replaced, an undefined one is left as written, and
// $$ is an escaped $.
func expandVars(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
