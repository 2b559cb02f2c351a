package listener

import (
	"fmt"
	"os"
)

// makeRunDir makes the private run directory (mode 0700) that holds the routers' sockets.
func makeRunDir(parent string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "olio-")
	if err != nil {
		return "", fmt.Errorf("make run directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("make run directory: %w", err)
	}
	return dir, nil
}
