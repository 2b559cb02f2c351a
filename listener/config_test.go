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
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the message; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero workers", func(c *Config) { c.Workers = 0 }, "--workers 0: must be from 1"},
		{"too many workers", func(c *Config) { c.Workers = MaxWorkers + 1 }, "--workers"},
		{"bad key", func(c *Config) { c.Key = "foo:x" }, `unknown source "foo"`},
		{"bad ready", func(c *Config) { c.ReadyMode = "soon" }, `--ready "soon"`},
		{"zero forward timeout", func(c *Config) { c.ForwardTimeout = 0 }, "--forward-timeout"},
		{"negative request timeout", func(c *Config) { c.RequestTimeout = -time.Second }, "--request-timeout"},
		{"zero header timeout", func(c *Config) { c.HeaderTimeout = 0 }, "--header-timeout 0s: must be positive"},
		{"negative idle timeout", func(c *Config) { c.IdleTimeout = -time.Second }, "--idle-timeout"},
		{"tiny header limit", func(c *Config) { c.MaxHeaderBytes = 10 }, "--max-header-bytes"},
		{"missing app", func(c *Config) { c.App = []string{"/nonexistent/app"} }, `app "/nonexistent/app" cannot be run`},
		{"real app", func(c *Config) { c.App = []string{"sh", "-c", "true"} }, ""},
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

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "olio.json")
	os.WriteFile(path, []byte(`{"workers": 3, "key": "query:u", "cpu-affinity": true, "app": ["./app", "-v"]}`), 0o600)
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"workers": "3", "key": "query:u", "cpu-affinity": "true", "app": `["./app","-v"]`}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	os.WriteFile(path, []byte(`{"workers": `), 0o600)
	if _, err := ReadFile(path); !errors.Is(err, ErrConfig) {
		t.Errorf("truncated file: %v, want ErrConfig", err)
	}
	os.WriteFile(path, []byte(`{"workers": {"n": 1}}`), 0o600)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), `"workers"`) {
		t.Errorf("object value: %v", err)
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
	for _, d := range []string{"olio-" + dead + "-1", "olio-" + live + "-2", "olio-e2e-3", "olio-" + dead + "-4"} {
		if err := os.MkdirAll(filepath.Join(parent, d, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A router still listens in -4: its master is alive in a PID namespace we cannot see.
	ln, err := net.Listen("unix", filepath.Join(parent, "olio-"+dead+"-4", "router-0.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.WriteFile(filepath.Join(parent, "olio-"+dead+"-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := makeRunDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "olio-"+live+"-") {
		t.Errorf("run dir %s is not named after this master's pid %s", dir, live)
	}
	if _, err := os.Stat(filepath.Join(parent, "olio-"+dead+"-1")); !os.IsNotExist(err) {
		t.Errorf("the run dir of dead master %s is still there (%v)", dead, err)
	}
	for _, keep := range []string{"olio-" + live + "-2", "olio-e2e-3", "olio-" + dead + "-file", "olio-" + dead + "-4"} {
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
}
