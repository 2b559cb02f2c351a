package listener

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/process"
)

// runDirPrefix begins a run directory's name: olio-PID-RANDOM, PID the master's, so that
// sweepRunDirs can tell whose it was. The files in it are named by process.RunDir.
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
	for _, s := range process.RunDir(dir).PeerSockets() {
		if c, err := net.DialTimeout("unix", s, 100*time.Millisecond); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// runDir is the private run directory as this master made it: what is at its path is
// still it only while it is the same directory, with the same owner and mode. The master
// holds it open, so that its inode cannot be reused for a directory made at its path once
// it is removed (which would then pass for it).
type runDir struct {
	path string
	f    *os.File // the directory, open until close
}

// newRunDir makes a private run directory in parent (makeRunDir) and holds it open.
func newRunDir(parent string) (*runDir, error) {
	path, err := makeRunDir(parent)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err == nil {
		d := &runDir{path: path, f: f}
		if err = d.check(); err == nil {
			return d, nil
		}
		f.Close()
		err = fmt.Errorf("%s %w", path, err)
	}
	os.RemoveAll(path)
	return nil, fmt.Errorf("make run directory: %w", err)
}

// check returns nil while the directory at d's path is still the one made, or says what
// became of it: removed, another file or directory in its place, its mode or owner changed.
func (d *runDir) check() error {
	fi, err := os.Lstat(d.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("was removed")
	case err != nil:
		return fmt.Errorf("cannot be checked (%w)", unwrapPath(err))
	case !d.same(fi):
		return errors.New("was replaced by another file")
	case fi.Mode().Perm() != 0o700:
		return fmt.Errorf("was given mode %04o", fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("was given to uid %d", st.Uid)
	}
	return nil
}

// same reports whether fi is the directory d made.
func (d *runDir) same(fi os.FileInfo) bool {
	made, err := d.f.Stat()
	return err == nil && os.SameFile(fi, made)
}

// close removes the directory if what is at its path is still the one made (whatever its
// mode now), never what someone else has put there since, and lets it go.
func (d *runDir) close() {
	if fi, err := os.Lstat(d.path); err == nil && d.same(fi) {
		os.RemoveAll(d.path)
	}
	d.f.Close()
}

// runDirCheck is how often the master checks that its run directory is still there.
const runDirCheck = time.Second

// runDirMoveTimeout bounds how long the master waits for each router to move to a new
// run directory.
const runDirMoveTimeout = 10 * time.Second

// watchRunDir checks the run directory every runDirCheck until the master's life ends, and
// renews it (renewRunDir) when it was removed or replaced: without it, a router that
// restarts cannot bind its sockets, and routers cannot dial each other anew.
func (m *Master) watchRunDir() {
	t := time.NewTicker(runDirCheck)
	defer t.Stop()
	for {
		select {
		case <-m.life.Done():
			return
		case <-t.C:
		}
		if d := m.runDir.Load(); d == nil || d.check() == nil {
			continue
		}
		err := m.submit(m.life, "run directory", func(ctx context.Context, c *cluster) error { return nil })
		if err != nil && !errors.Is(err, ErrStopped) && m.life.Err() == nil {
			m.logger.Warn("run directory: checking it", "err", err)
		}
	}
}

// checkRunDir renews the run directory if it was removed or replaced. It runs on the loop,
// first thing in every operation (cluster.run), so that it is never renewed while a
// membership change is under way; watchRunDir submits an empty operation for it.
func (c *cluster) checkRunDir(ctx context.Context) {
	old := c.runDir.Load()
	if old == nil {
		return // a master made for a test of something else
	}
	why := old.check()
	if why == nil {
		return
	}
	d, err := newRunDir(c.cfg.RunDir)
	if err != nil {
		if c.runDirFailed.CompareAndSwap(false, true) { // once, until one is made
			c.logger.Error("the run directory "+why.Error()+", and a new one cannot be made; retrying every second",
				"run_dir", old.path, "err", err)
		}
		return
	}
	c.runDirFailed.Store(false)
	note := fmt.Sprintf("the run directory %s %s (noticed %s); made %s", old.path, why, time.Now().Format(time.RFC3339), d.path)
	c.runDirNote.Store(&note) // first: the status never shows the new one without it
	c.runDir.Store(d)
	// The old directory is closed once the routers have moved: one that was only chmod'ed
	// still holds the sockets they use until then.
	defer old.close()
	c.logger.Warn("the run directory "+why.Error()+": made a new one, moving the routers there",
		"old_run_dir", old.path, "run_dir", d.path)
	ctx, cancel := context.WithTimeout(ctx, runDirMoveTimeout)
	defer cancel()
	v := c.snapshot()
	// Every router listens in the new directory first; then each is told where the others
	// are. A router that says hello meanwhile is configured with the new one.
	errs := c.callAll(ctx, v.workers, func(int) descend.Request { return &descend.RunDir{ID: c.nextID(), Dir: d.path} })
	errs = append(errs, c.callAll(ctx, v.workers, func(int) descend.Request { return c.membership(v, c.nextID()) })...)
	if err := errors.Join(errs...); err != nil {
		c.logger.Error("run directory: not every router moved to the new one", "run_dir", d.path, "err", err)
	} else {
		c.logger.Info("run directory: every router moved to the new one", "run_dir", d.path)
	}
}

// selfExe names this process's own binary: the file it was started from, even once another
// has been put at its path (the kernel keeps the old one for as long as it runs). In a
// child between fork and exec it is still the parent's binary, which the child then runs.
const selfExe = "/proc/self/exe"

// ownBinary is what routers run: selfExe, so that a router started later (olio scale, a
// crash) is this master's own olio, not a new build a package upgrade has put at exe —
// only a hot upgrade (USR2) runs that. exe where /proc is not mounted.
func ownBinary(exe string) string {
	if _, err := os.Stat(selfExe); err != nil {
		return exe
	}
	return selfExe
}
