package listener

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/router/process"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	script := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	text := script("notes.txt", "hello\n")
	longText := script("long.txt", strings.Repeat("a line of text\n", 40)) // more than the 256 bytes read
	envAlone := script("envalone.sh", "#!/usr/bin/env\n")
	noInterp := script("nointerp.sh", "#!/nonexistent/interp\necho hi\n")
	noEnvProg := script("noenvprog.sh", "#!/usr/bin/env olio-no-such-interpreter -x\n")
	goodScript := script("good.sh", "#!/bin/sh -e\nexec true\n")
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the message; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero workers", func(c *Config) { c.Workers = 0 }, "--workers 0: must be from 1"},
		{"too many workers", func(c *Config) { c.Workers = MaxWorkers + 1 }, "--workers"},
		{"the most workers", func(c *Config) { c.Workers = MaxWorkers }, ""},
		{"the least header limit", func(c *Config) { c.MaxHeaderBytes = 1024 }, ""},
		{"below the least header limit", func(c *Config) { c.MaxHeaderBytes = 1023 }, "--max-header-bytes 1023"},
		{"request and health timeouts off", func(c *Config) { c.RequestTimeout, c.HealthTimeout = 0, 0 }, ""},
		{"bad key", func(c *Config) { c.Key = "foo:x" }, `unknown source "foo"`},
		{"forwarded fronts", func(c *Config) { c.ForwardedAllowIPs = "127.0.0.1,10.0.0.0/8,fd00::/8" }, ""},
		{"bad forwarded front", func(c *Config) { c.ForwardedAllowIPs = "10.0.0.0/8,10.0.0.300" }, `--forwarded-allow-ips "10.0.0.0/8,10.0.0.300": "10.0.0.300" is not an address or a CIDR prefix`},
		{"bad ready", func(c *Config) { c.ReadyMode = "soon" }, `--ready "soon"`},
		{"zero forward timeout", func(c *Config) { c.ForwardTimeout = 0 }, "--forward-timeout"},
		{"negative request timeout", func(c *Config) { c.RequestTimeout = -time.Second }, "--request-timeout"},
		{"zero header timeout", func(c *Config) { c.HeaderTimeout = 0 }, "--header-timeout 0s: must be positive"},
		{"negative idle timeout", func(c *Config) { c.IdleTimeout = -time.Second }, "--idle-timeout"},
		{"tiny header limit", func(c *Config) { c.MaxHeaderBytes = 10 }, "--max-header-bytes"},
		{"missing app", func(c *Config) { c.App = []string{"/nonexistent/app"} }, `app "/nonexistent/app" cannot be run`},
		{"real app", func(c *Config) { c.App = []string{"sh", "-c", "true"} }, ""},
		{"empty listen", func(c *Config) { c.Listen = "" }, `--listen "": give host:port`},
		{"listen without port", func(c *Config) { c.Listen = "8080" }, `--listen "8080": not host:port`},
		{"listen on every interface", func(c *Config) { c.Listen = ":8080" }, ""},
		{"not an executable format", func(c *Config) { c.App = []string{text} }, "app " + text + " is not an executable file (no ELF header or #! line)"},
		{"a long text file", func(c *Config) { c.App = []string{longText} }, "app " + longText + " is not an executable file"},
		{"env without a program", func(c *Config) { c.App = []string{envAlone} }, ""}, // the kernel's business, not a panic
		{"missing interpreter", func(c *Config) { c.App = []string{noInterp} }, "app " + noInterp + ": its interpreter /nonexistent/interp does not exist"},
		{"env program not in PATH", func(c *Config) { c.App = []string{noEnvProg} }, "its interpreter olio-no-such-interpreter (run by /usr/bin/env) is not in $PATH"},
		{"script", func(c *Config) { c.App = []string{goodScript, "arg"} }, ""},
		{"huge secret", func(c *Config) { c.Secret = strings.Repeat("s", MaxSecretBytes+1) }, "the secret from --secret (or $OLIO_SECRET) is 1025 bytes; at most 1024"},
		{"longest secret", func(c *Config) { c.Secret = strings.Repeat("s", MaxSecretBytes) }, ""},
		{"secret with a space", func(c *Config) { c.Secret = "a b" }, "printable ASCII without spaces"},
		{"cluster addr", func(c *Config) { c.ClusterAddr = "lb.internal:80" }, ""},
		{"cluster addr as a URL", func(c *Config) { c.ClusterAddr = "http://lb.internal:80" }, `--cluster-addr "http://lb.internal:80": not host:port`},
		{"cluster addr without host", func(c *Config) { c.ClusterAddr = ":80" }, "not host:port"},
		{"cluster addr without port", func(c *Config) { c.ClusterAddr = "lb.internal" }, "not host:port"},
		{"negative drain delay", func(c *Config) { c.DrainDelay = -time.Second }, "--drain-delay -1s: must not be negative"},
		{"secret with DEL", func(c *Config) { c.Secret = "a\x7fb" }, "printable ASCII without spaces"},
		{"secret of the printable ends", func(c *Config) { c.Secret = "!~" }, ""},
		{"value from a config file", func(c *Config) {
			c.Workers = -1
			c.Sources = map[string]string{"workers": "config file /etc/olio.json"}
		}, "--workers -1 (from config file /etc/olio.json): must be from 1"},
	} {
		c := DefaultConfig()
		tc.change(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig)):
			t.Errorf("%s: got %v, want an ErrConfig saying %q", tc.name, err, tc.want)
		}
	}
}

func TestSecret(t *testing.T) {
	c := DefaultConfig()
	a, _ := loadSecret(&c)
	b, _ := loadSecret(&c)
	if len(a) != 64 || a == b || !validSecret(a) {
		t.Errorf("random secrets %q, %q", a, b)
	}
	path := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(path, []byte("  from-file\n"), 0o600)
	c.SecretFile = path
	if s, err := loadSecret(&c); s != "from-file" || err != nil {
		t.Errorf("secret file: %q, %v", s, err)
	}
	os.WriteFile(path, []byte("\n"), 0o600)
	if _, err := loadSecret(&c); !errors.Is(err, ErrConfig) {
		t.Errorf("empty secret file: %v", err)
	}
	// A secret this large made every app start fail with "argument list too long".
	os.WriteFile(path, []byte(strings.Repeat("x", 200<<10)+"\n"), 0o600)
	if _, err := loadSecret(&c); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--secret-file "+path+" is 204800 bytes; at most 1024") {
		t.Errorf("200 KiB secret file: %v, want an ErrConfig naming the file and the bound", err)
	}
	os.WriteFile(path, []byte("with space\n"), 0o600)
	if _, err := loadSecret(&c); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), path) {
		t.Errorf("secret file with a space: %v, want an ErrConfig naming the file", err)
	}
	for _, s := range []string{"", "a b", "tab\t", "é"} {
		if validSecret(s) {
			t.Errorf("validSecret(%q) = true", s)
		}
	}
}

func TestRunDirSweepsDeadMasters(t *testing.T) {
	parent := t.TempDir()
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	dead := strconv.Itoa(done.ProcessState.Pid()) // exited and reaped
	live := strconv.Itoa(os.Getpid())
	for _, d := range []string{runDirPrefix + dead + "-1", runDirPrefix + live + "-2", "olio-e2e-3", runDirPrefix + dead + "-4"} {
		if err := os.MkdirAll(filepath.Join(parent, d, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A router still listens in -4: its master is alive in a PID namespace we cannot see.
	ln, err := net.Listen("unix", process.RunDir(filepath.Join(parent, runDirPrefix+dead+"-4")).PeerSocket(0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.WriteFile(filepath.Join(parent, runDirPrefix+dead+"-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := makeRunDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), runDirPrefix+live+"-") {
		t.Errorf("run dir %s is not named after this master's pid %s", dir, live)
	}
	if _, err := os.Stat(filepath.Join(parent, runDirPrefix+dead+"-1")); !os.IsNotExist(err) {
		t.Errorf("the run dir of dead master %s is still there (%v)", dead, err)
	}
	for _, keep := range []string{runDirPrefix + live + "-2", "olio-e2e-3", runDirPrefix + dead + "-file", runDirPrefix + dead + "-4"} {
		if _, err := os.Stat(filepath.Join(parent, keep)); err != nil {
			t.Errorf("%s was removed: %v", keep, err)
		}
	}
}

func TestRunDirPrivate(t *testing.T) {
	dir, err := makeRunDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
}

func TestBindInUse(t *testing.T) {
	f, addr, err := Bind("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := Bind(addr.String()); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("second bind: %v", err)
	}
}

func TestBindErrorsSayWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}, "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (under systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE); or pick a port from 1024 up with --metrics"},
		{&net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}, "already in use; stop what holds it or pick another with --metrics"},
	} {
		if got := listenError("--metrics", "127.0.0.1:80", tc.err).Error(); !strings.Contains(got, tc.want) || !strings.HasPrefix(got, "cannot listen on 127.0.0.1:80: ") {
			t.Errorf("listenError(%v) = %q, want it to say %q", tc.err, got, tc.want)
		}
	}
}

func TestBinfmtMatches(t *testing.T) {
	jar := "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
	qemu := "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: F\noffset 0\nmagic 7f454c460201\nmask ffffffffffff\n"
	pyc := "enabled\ninterpreter /usr/bin/python3\nflags: \noffset 0\nmagic 550d0d0a\n"
	for _, tc := range []struct {
		entry, path, head string
		want              bool
	}{
		{jar, "/srv/app.jar", "PK\x03\x04", true},
		{jar, "/srv/app", "PK\x03\x04", false},
		{qemu, "/srv/app", "\x7fELF\x02\x01rest", true},
		{pyc, "/srv/app.pyc", "U\r\r\n....", true},
		{pyc, "/srv/app.pyc", "U\r\r\n", true}, // the magic is the whole head
		{pyc, "/srv/app.pyc", "hello", false},
		{pyc, "/srv/app.pyc", "U", false}, // shorter than the magic
	} {
		if got := binfmtMatches(tc.entry, tc.path, []byte(tc.head)); got != tc.want {
			t.Errorf("binfmtMatches(%q, %s, %q) = %v, want %v", tc.entry, tc.path, tc.head, got, tc.want)
		}
	}
}

func TestUpgradeArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"serve --workers 2 -- ./app -x", "serve --upgrade --workers 2 -- ./app -x"},
		{"serve --upgrade --workers 2", "serve --upgrade --workers 2"},
		{"--workers 2", "serve --upgrade --workers 2"},
	} {
		if g := strings.Join(upgradeArgs(strings.Fields(tc.in)), " "); g != tc.want {
			t.Errorf("upgradeArgs(%q) = %q, want %q", tc.in, g, tc.want)
		}
	}
}

func TestHandoverRoundTrip(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.WriteString(`{"secret":"abc","workers":5}` + "\n")
	w.Close()
	h, err := ReadHandover(r)
	if err != nil || h.Secret != "abc" || h.Workers != 5 {
		t.Errorf("ReadHandover = %+v, %v", h, err)
	}
}

func TestLineWriterKeepsLinesWhole(t *testing.T) {
	var out strings.Builder
	w := &lineWriter{out: &out, mu: new(sync.Mutex)}
	w.Write([]byte("one\ntw"))
	if out.String() != "one\n" {
		t.Errorf("after a partial line: %q", out.String())
	}
	w.Write([]byte("o\n"))
	if out.String() != "one\ntwo\n" {
		t.Errorf("after completing it: %q", out.String())
	}
	w.Write([]byte("\n")) // a blank line is a whole line too
	if out.String() != "one\ntwo\n\n" {
		t.Errorf("after a blank line: %q", out.String())
	}
}
