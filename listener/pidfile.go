package listener

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PIDFile is a file holding the master's pid (--pidfile), for init scripts and
// `kill -HUP $(cat FILE)`.
type PIDFile struct {
	path string
	pid  int
}

// WritePIDFile writes pid to path atomically (a temporary file renamed into place, mode
// 0644), replacing what was there: after a hot upgrade the new master's pid replaces the
// old one's. Its errors name path, never the temporary file.
func WritePIDFile(path string, pid int) (*PIDFile, error) {
	if err := checkPIDPath(path); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, pidfileError(path, err)
	}
	_, err = tmp.WriteString(strconv.Itoa(pid) + "\n")
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, pidfileError(path, err)
	}
	return &PIDFile{path: path, pid: pid}, nil
}

// checkPIDPath reports a pidfile path that cannot be written: its directory is missing or
// is not a directory, or the path is a directory.
func checkPIDPath(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--pidfile %s: directory %s does not exist; create it or give another path", path, dir)
	case err != nil:
		return pidfileError(path, err)
	case !fi.IsDir():
		return fmt.Errorf("--pidfile %s: %s is not a directory; give another path", path, dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--pidfile %s is a directory; give the path of a file, e.g. %s", path, filepath.Join(path, "olio.pid"))
	}
	return nil
}

// pidfileError says what went wrong with the pidfile at path in one line, without the
// temporary file's name.
func pidfileError(path string, err error) error {
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	err = unwrapPath(err)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("--pidfile %s: no permission to write in %s; give a path this user may write", path, filepath.Dir(path))
	case errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.ENOTEMPTY):
		return fmt.Errorf("--pidfile %s is a directory; give the path of a file", path)
	}
	return fmt.Errorf("--pidfile %s: %w", path, err)
}

// checkPIDFile reports why a new master may not write path: checkPIDPath's reasons, or
// the file names a running olio master other than this process (exe is this olio's
// binary). It returns the pid of a stale file (a process that is gone or is not olio),
// which the master may replace, or 0.
func checkPIDFile(path, exe string) (stale int, err error) {
	if err := checkPIDPath(path); err != nil {
		return 0, err
	}
	pid, err := ReadPIDFile(path)
	if err != nil {
		return 0, nil // no file, or no pid in it: nothing to protect
	}
	if pid == os.Getpid() || !runningOlio(pid, exe) {
		return pid, nil
	}
	return 0, fmt.Errorf("--pidfile %s names pid %d: %w; stop that one first (olio stop, or kill %d), or give this olio another --pidfile",
		path, pid, ErrPIDFileInUse, pid)
}

// runningOlio reports whether pid is a live olio master: in /proc/PID/cmdline, the
// program is named olio (or as exe is) and "serve" is among its arguments.
//
// A zombie has an empty command line, and so, for a moment, may a process the kernel is
// still setting up (between fork and exec): an empty line is taken as "not olio" only once
// the process is a zombie or gone; otherwise it is read again for up to cmdlineSettle, and
// a line still empty after that is judged by the program's name alone (/proc/PID/exe),
// so a live master is never mistaken for a stale pidfile.
func runningOlio(pid int, exe string) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	var b []byte
	for deadline := time.Now().Add(cmdlineSettle); ; time.Sleep(cmdlineSettle / 20) {
		var err error
		if b, err = os.ReadFile(proc + "/cmdline"); err != nil || zombie(proc) {
			return false
		}
		if len(b) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(b) == 0 {
		target, err := os.Readlink(proc + "/exe")
		return err == nil && isOlioName(filepath.Base(target), exe)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return isOlioName(filepath.Base(args[0]), exe) && slices.Contains(args[1:], "serve")
}

// cmdlineSettle bounds how long runningOlio waits for a new process's command line.
const cmdlineSettle = 200 * time.Millisecond

// isOlioName reports whether a program named prog is olio: named olio…, or as this
// olio's binary exe is.
func isOlioName(prog, exe string) bool {
	return prog == filepath.Base(exe) || strings.HasPrefix(prog, "olio")
}

// zombie reports whether the process at proc (/proc/PID) has exited and awaits its
// parent's wait (state Z or X in /proc/PID/stat).
func zombie(proc string) bool {
	b, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold any byte.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// ReadPIDFile returns the pid held in the file at path.
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s does not hold a pid", path)
	}
	return pid, nil
}

// Remove removes the file if it still holds this pid; a file another master has written
// since (a hot upgrade) is left alone.
func (p *PIDFile) Remove() error {
	if pid, err := ReadPIDFile(p.path); err != nil || pid != p.pid {
		return nil
	}
	if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("pidfile: %w", err)
	}
	return nil
}
