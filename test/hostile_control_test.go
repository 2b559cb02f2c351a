package test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The control socket against other local users: the default location is a
// directory olio makes and checks, and a client sends nothing to a server of another user.

// olioEnv is this process's environment without $XDG_RUNTIME_DIR, with TMPDIR=tmp: the
// default control socket is then tmp/olio-UID/olio.sock.
func olioEnv(tmp string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	return append(env, "TMPDIR="+tmp)
}

// runOlio runs olio with env and args for at most d and returns its output and exit error.
func runOlio(env []string, d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, olioBin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), ctx.Err()
	}
	return string(out), err
}

// TestHostileControlDirSquatted: without $XDG_RUNTIME_DIR the default control socket is in
// $TMPDIR/olio-UID, a directory olio makes with mode 0700. Whatever another user may have
// put there first (a directory others can write, a symbolic link, a file, a directory of
// theirs), olio serve refuses to start and olio status refuses to talk, each with one line
// that names the path.
func TestHostileControlDirSquatted(t *testing.T) {
	t.Parallel()
	uid := os.Getuid()
	for _, tc := range []struct {
		name  string
		squat func(t *testing.T, dir string)
		why   string
		root  bool
	}{
		{"open directory", func(t *testing.T, dir string) { mkdir(t, dir); os.Chmod(dir, 0o777) }, "mode is 0777", false},
		{"symbolic link", func(t *testing.T, dir string) {
			mkdir(t, dir+".real")
			if err := os.Symlink(dir+".real", dir); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link", false},
		{"file", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a directory", false},
		{"another user's directory", func(t *testing.T, dir string) {
			mkdir(t, dir)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 65534", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && uid != 0 {
				t.Skip("needs root to give a directory to another user")
			}
			tmp := t.TempDir()
			dir := filepath.Join(tmp, "olio-"+strconv.Itoa(uid))
			tc.squat(t, dir)
			env := olioEnv(tmp)
			out, err := runOlio(env, 10*time.Second, "serve", "--listen", freeAddr(t), "--workers", "1", "--secret", "s3cr3t-s3cr3t")
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("olio serve with %s at the control socket's directory: %v, want it to refuse to start; output:\n%s", tc.name, err, out)
			}
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, dir) || !strings.Contains(out, tc.why) {
				t.Errorf("olio serve refused with %q; want one line naming %s and saying %q", out, dir, tc.why)
			}
			out, err = runOlio(env, 10*time.Second, "status")
			if !errors.As(err, &exit) || !strings.Contains(out, dir) || !strings.Contains(out, tc.why) {
				t.Errorf("olio status with %s at the control socket's directory: %v, %q; want a refusal naming it", tc.name, err, out)
			}
		})
	}
	t.Run("nothing there", func(t *testing.T) {
		tmp := t.TempDir()
		env := olioEnv(tmp)
		c := newCluster(t, freeAddr(t))
		serve := exec.Command(olioBin, "serve", "--listen", c.Addr, "--workers", "1", "--secret", "s3cr3t-s3cr3t")
		serve.Env = env
		c.start(serve, nil) // with the default control socket
		if !Eventually(20*time.Second, func() bool { _, err := runOlio(env, 10*time.Second, "status"); return err == nil }) {
			t.Fatalf("olio status with default paths never answered; olio serve's output:\n%s", c.Out)
		}
		dir := filepath.Join(tmp, "olio-"+strconv.Itoa(uid))
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("the control socket's directory %s: %v, %v; want a directory of mode 0700", dir, fi, err)
		}
		if out, err := runOlio(env, 60*time.Second, "stop"); err != nil {
			t.Errorf("olio stop with default paths: %v\n%s", err, out)
		}
		c.WaitExit(30*time.Second, "olio stop with default paths")
	})
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestHostileControlPeerOtherUser: a control socket served by another user's process (not
// root's) gets no command from olio status: the client checks the server's uid
// (SO_PEERCRED) before it sends a byte.
func TestHostileControlPeerOtherUser(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to listen as another user")
	}
	dir, err := os.MkdirTemp("", "olio-peer-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777) // so that uid 65534 may bind in it
	path := filepath.Join(dir, "ctl.sock")
	// Listen as uid 65534 (the effective uid, which SO_PEERCRED reports), then back to root.
	if err := syscall.Setresuid(-1, 65534, -1); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err := syscall.Setresuid(-1, 0, -1); err != nil {
		t.Fatalf("back to root: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			got <- n
		}
	}()
	for _, args := range [][]string{{"status"}, {"stop"}, {"scale", "--control", path, "0"}} {
		if args[0] != "scale" {
			args = append(args, "--control", path)
		}
		out, err := runOlio(os.Environ(), 20*time.Second, args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(out, "uid 65534") {
			t.Errorf("olio %s to a server of uid 65534: %v, %q; want a refusal naming the uid", args[0], err, out)
		}
		select {
		case n := <-got:
			if n > 0 {
				t.Errorf("olio %s sent %d bytes to a server of another user", args[0], n)
			}
		case <-time.After(10 * time.Second):
		}
	}
}
