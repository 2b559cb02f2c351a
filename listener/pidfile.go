package listener

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PIDFile is a file holding the master's pid (--pidfile), for init scripts and
// `kill -HUP $(cat FILE)`.
type PIDFile struct {
	path string
	pid  int
}

// WritePIDFile writes pid to path atomically (a temporary file renamed into place, mode
// 0644), replacing what was there: after a hot upgrade the new master's pid replaces the
// old one's.
func WritePIDFile(path string, pid int) (*PIDFile, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("pidfile: %w; check --pidfile", err)
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
		return nil, fmt.Errorf("pidfile: %w; check --pidfile", err)
	}
	return &PIDFile{path: path, pid: pid}, nil
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
