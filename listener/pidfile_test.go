package listener

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing", "olio.pid"), "--pidfile " + filepath.Join(dir, "missing", "olio.pid") + ": directory " + filepath.Join(dir, "missing") + " does not exist"},
		{dir, "--pidfile " + dir + " is a directory"},
	} {
		_, err := WritePIDFile(tc.path, 1)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("WritePIDFile(%s): %v, want %q", tc.path, err, tc.want)
		}
		if _, cerr := checkPIDFile(tc.path, "/usr/bin/olio"); cerr == nil || !strings.HasPrefix(cerr.Error(), tc.want) {
			t.Errorf("checkPIDFile(%s): %v, want %q", tc.path, cerr, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), ".olio.pid.") {
			t.Errorf("the error names olio's temporary file: %v", err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	bad := filepath.Join(dir, "bad.pid")
	os.WriteFile(bad, []byte("not a pid\n"), 0o644)
	if _, err := ReadPIDFile(bad); err == nil {
		t.Error("ReadPIDFile of garbage succeeded")
	}
}

// startNamed starts a process whose command line (/proc/PID/cmdline) is args, and
// returns once the kernel shows that line. The process waits on its stdin: exit closes
// it, and the process exits but stays unreaped (a zombie) until the end of the test.
func startNamed(t *testing.T, args ...string) (pid int, exit func()) {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: append(args[:1:1], append([]string{"-c", "read x"}, args[1:]...)...)}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	want := strings.Join(cmd.Args, "\x00") + "\x00"
	proc := "/proc/" + strconv.Itoa(cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(proc + "/cmdline")
		if string(b) == want {
			return cmd.Process.Pid, func() { in.Close() }
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/cmdline is %q, want %q", proc, b, want)
		}
	}
}

// A second master must not take the pidfile of a running one: it would overwrite it and
// remove it on exit. A pidfile left by a process that is gone, or that is not olio, is
// stale and replaced.
func TestPIDFileOfARunningOlio(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "olio.pid")
	write := func(pid int) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	olio, _ := startNamed(t, "olio", "serve")
	write(olio)
	stale, err := checkPIDFile(path, "/usr/local/bin/olio")
	if !errors.Is(err, ErrPIDFileInUse) || stale != 0 || !strings.Contains(err.Error(), "--pidfile "+path+" names pid "+strconv.Itoa(olio)) {
		t.Errorf("pidfile of a running olio: %d, %v; want ErrPIDFileInUse naming the file and pid", stale, err)
	}
	renamed, _ := startNamed(t, "/opt/x/olio-2.1", "--log-format", "json", "serve")
	write(renamed)
	if _, err := checkPIDFile(path, "/opt/x/olio-2.1"); !errors.Is(err, ErrPIDFileInUse) {
		t.Errorf("pidfile of a running olio named as this binary: %v, want ErrPIDFileInUse", err)
	}

	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	other, _ := startNamed(t, "sh", "serve")
	// An olio master that has exited but is not reaped yet: a zombie, with an empty
	// command line, whose pidfile is stale.
	zombie, exit := startNamed(t, "olio", "serve")
	exit()
	stat := "/proc/" + strconv.Itoa(zombie) + "/stat"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(stat)
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed a zombie: %q", stat, b)
		}
	}
	for _, pid := range []int{done.ProcessState.Pid(), other, zombie, os.Getpid()} {
		write(pid)
		if stale, err := checkPIDFile(path, "/usr/local/bin/olio"); stale != pid || err != nil {
			t.Errorf("pidfile of pid %d (gone, not olio, a zombie, or this process): %d, %v; want it stale", pid, stale, err)
		}
	}
	os.Remove(path)
	if stale, err := checkPIDFile(path, "/usr/local/bin/olio"); stale != 0 || err != nil {
		t.Errorf("no pidfile: %d, %v", stale, err)
	}
}
