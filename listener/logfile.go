package listener

import (
	"fmt"
	"os"
	"sync"
)

// LogFile is a log destination that can be reopened, for logrotate's convention: rotate
// the file by renaming it, then send USR1 so olio writes to a fresh file at the old path.
type LogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// OpenLogFile opens (appending, creating with mode 0600) the log file at path.
func OpenLogFile(path string) (*LogFile, error) {
	l := &LogFile{path: path}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reopen closes the file and opens path again.
func (l *LogFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close() // under the lock, as in Close: no Write is using it
	}
	l.f = f
	return nil
}

// Write writes to the current file. A failed write is dropped: logging never stops olio.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(p)
	return len(p), nil
}

// Close closes the file.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
