package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// reaper kills the cluster's processes if this process dies without Stop
// (a test timeout's panic, a signal): envtest starts etcd and kube-apiserver
// without a parent-death signal, so they would outlive a crashed test binary.
// It is a shell that collects process ids from a pipe; when the pipe closes
// because this process died it kills each one's process group, and when Stop
// disarms it, it exits quietly.
type reaper struct {
	w   *os.File
	cmd *exec.Cmd
}

const reaperScript = `pids=
while read -r pid; do
  [ "$pid" = disarm ] && exit 0
  pids="$pids $pid"
done
for p in $pids; do kill -9 -"$p" "$p" 2>/dev/null; done
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
	return &reaper{w: w, cmd: cmd}, nil
}

// watch adds a process (and its process group) to kill if this process dies.
func (r *reaper) watch(pid int) {
	if r != nil {
		fmt.Fprintln(r.w, pid)
	}
}

// disarm lets the reaper exit without killing anything.
func (r *reaper) disarm() {
	if r != nil {
		fmt.Fprintln(r.w, "disarm")
		_ = r.w.Close()
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
