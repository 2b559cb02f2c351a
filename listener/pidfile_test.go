package listener

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "olio.pid")
	p, err := WritePIDFile(path, 4242)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "4242\n" {
		t.Fatalf("pidfile holds %q (%v), want \"4242\\n\"", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if pid, err := ReadPIDFile(path); pid != 4242 || err != nil {
		t.Errorf("ReadPIDFile = %d, %v", pid, err)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pidfile still there after Remove: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// After a hot upgrade the new master rewrites the pidfile; the old one must not remove it.
func TestPIDFileKeepsAnotherMastersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "olio.pid")
	old, err := WritePIDFile(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WritePIDFile(path, 200); err != nil {
		t.Fatal(err)
	}
	if err := old.Remove(); err != nil {
		t.Fatal(err)
	}
	if pid, err := ReadPIDFile(path); pid != 200 || err != nil {
		t.Errorf("after the old master's Remove: ReadPIDFile = %d, %v; want 200", pid, err)
	}
}

func TestPIDFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := WritePIDFile(filepath.Join(dir, "missing", "olio.pid"), 1); err == nil {
		t.Error("WritePIDFile into a missing directory succeeded")
	}
	bad := filepath.Join(dir, "bad.pid")
	os.WriteFile(bad, []byte("not a pid\n"), 0o644)
	if _, err := ReadPIDFile(bad); err == nil {
		t.Error("ReadPIDFile of garbage succeeded")
	}
}
