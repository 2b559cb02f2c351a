package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/olio-dev/olio/router"
)

// runDirPrefix begins a run directory's name: olio-PID-RANDOM, PID the master's, so that
// sweepRunDirs can tell whose it was. The files in it are named by router.RunDir.
const runDirPrefix = "olio-"

// makeRunDir makes the private run directory (mode 0700) that holds the routers' sockets:
// parent/olio-PID-RANDOM. A master stopped gracefully removes its own; one killed with
// kill -9 cannot, so makeRunDir first removes those of masters that are gone.
func makeRunDir(parent string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	sweepRunDirs(parent)
	dir, err := os.MkdirTemp(parent, runDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("make run directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("make run directory: %w", err)
	}
	return dir, nil
}

// sweepRunDirs removes the run directories in parent that this user's earlier masters left
// behind: a directory (not a link) named olio-PID-…, owned by us, whose PID no longer
// exists and where no router answers. A PID that exists is left alone, whoever it is now.
func sweepRunDirs(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, runDirPrefix+"*-*"))
	for _, dir := range dirs {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), runDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) && !answers(dir) {
			os.RemoveAll(dir)
		}
	}
}

// answers reports whether a router still listens on one of dir's sockets: the PID test
// alone would take a master in another PID namespace that shares the directory for gone.
func answers(dir string) bool {
	for _, s := range router.RunDir(dir).PeerSockets() {
		if c, err := net.DialTimeout("unix", s, 100*time.Millisecond); err == nil {
			c.Close()
			return true
		}
	}
	return false
}
