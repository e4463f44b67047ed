package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// reaper cleans up after this process if it dies without Stop (a test
// timeout's panic, a signal): envtest starts etcd and kube-apiserver without
// a parent-death signal, so they would outlive a crashed test binary, and
// the temporary folders would stay. It is a shell that collects process ids
// and folders from a pipe; when the pipe closes because this process died, it
// kills each process's group and removes the folders; when Stop disarms it,
// it exits quietly.
type reaper struct {
	mu sync.Mutex
	w  *os.File
}

const reaperScript = `pids=
dirs=
while IFS= read -r line; do
  case "$line" in
    disarm) exit 0 ;;
    pid\ *) pids="$pids ${line#pid }" ;;
    rm\ *) dirs="$dirs
${line#rm }" ;;
  esac
done
for p in $pids; do kill -9 -"$p" "$p" 2>/dev/null; done
printf '%s\n' "$dirs" | while IFS= read -r d; do [ -n "$d" ] && rm -rf -- "$d"; done
exit 0`

func startReaper() (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", reaperScript)
	cmd.Stdin = r
	// Its own process group: a Ctrl-C that ends the test must not end the reaper first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = r.Close()
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	return &reaper{w: w}, nil
}

func (r *reaper) send(line string) {
	if r == nil || strings.ContainsAny(line, "\n") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		fmt.Fprintln(r.w, line)
	}
}

// watch adds a process (and its process group) to kill if this process dies.
func (r *reaper) watch(pid int) { r.send("pid " + strconv.Itoa(pid)) }

// remove adds a folder to remove if this process dies.
func (r *reaper) remove(dir string) {
	if dir != "" {
		r.send("rm " + dir)
	}
}

// disarm lets the reaper exit without doing anything.
func (r *reaper) disarm() {
	r.send("disarm")
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		_ = r.w.Close()
		r.w = nil
	}
}

// childrenNamed returns the ids of this process's children whose command
// name is one of names.
func childrenNamed(names ...string) []int {
	me := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// stat is "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		comm := string(stat[open+1 : end])
		var state string
		var ppid int
		if _, err := fmt.Sscanf(string(stat[end+1:]), " %s %d", &state, &ppid); err != nil || ppid != me {
			continue
		}
		for _, n := range names {
			if comm == n {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
