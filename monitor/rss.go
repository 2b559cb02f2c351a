package monitor

import (
	"fmt"

	"github.com/prometheus/procfs"
)

// RSS is the resident set size of process pid in bytes, read from /proc.
func RSS(pid int) (uint64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("monitor: rss of pid %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("monitor: rss of pid %d: %w", pid, err)
	}
	return uint64(st.ResidentMemory()), nil
}
