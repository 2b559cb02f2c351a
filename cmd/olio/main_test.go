package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

// runOlio runs olio's command line in-process and returns its exit status and output.
func runOlio(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(append([]string{"olio"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeFile writes content to name in a fresh temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every mistake on the command line gets one line on stderr that says what is wrong, a
// non-zero exit, and no help on stdout.
func TestBadCommandLine(t *testing.T) {
	dir := t.TempDir()
	nobody := filepath.Join(dir, "nobody.sock") // no olio answers here
	secretFile := writeFile(t, "secret", "s3cret\n")
	logFile := filepath.Join(dir, "olio.log")
	config := func(content string) string { return writeFile(t, "olio.json", content) }
	arrayConfig := config(`["workers", 2]`)
	// serve's cases set --workers 0 first: if a case were accepted, olio would refuse to
	// start a cluster (of this test binary) rather than run it.
	serve := func(args ...string) []string { return append([]string{"serve", "--workers", "0"}, args...) }
	for _, tc := range []struct {
		args []string
		code int    // the exit status wanted
		want string // in the one line
	}{
		// flags urfave/cli could not parse
		{serve("--workers", "abc"), 2, `olio serve: invalid value "abc" for --workers: want a whole number; see olio serve --help`},
		{serve("--forward-timeout", "10"), 2, `olio serve: invalid value "10" for --forward-timeout: durations need a unit, like 10s; see olio serve --help`},
		{serve("--forward-timeout=soon"), 2, `invalid value "soon" for --forward-timeout: want a duration like 10s`},
		{serve("--handoff=maybe"), 2, `olio serve: invalid value "maybe" for --handoff: use --handoff or --handoff=false`},
		{serve("--bogus"), 2, "olio serve: unknown flag --bogus; see olio serve --help"},
		{serve("-x"), 2, "olio serve: unknown flag -x;"},
		{serve("--listen"), 2, "olio serve: --listen needs a value"},
		{[]string{"scale", "-1", "--control", nobody}, 1, `olio scale: no olio answers on the control socket ` + nobody}, // a step, not a flag
		{[]string{"status", "--control", nobody, "--timeout", "soon"}, 2, `olio status: invalid value "soon" for --timeout`},
		{[]string{"--bogus"}, 2, "olio: unknown flag --bogus; see olio --help"},
		// commands
		{[]string{"bogus"}, 2, `olio: unknown command "bogus"; run olio --help`},
		{[]string{"help", "bogus"}, 2, `olio: unknown command "bogus"; run olio --help`},
		// arguments a command does not take
		{[]string{"status", "extra"}, 2, `olio status: unexpected argument "extra"`},
		{[]string{"status", "extra", "--control", nobody}, 2, `olio status: unexpected argument "extra"`},
		{[]string{"reload", "--control", nobody, "extra"}, 2, `olio reload: unexpected argument "extra"`},
		{[]string{"stop", "--control", nobody, "extra"}, 2, `olio stop: unexpected argument "extra"`},
		{[]string{"version", "extra"}, 2, `olio version: unexpected argument "extra"`},
		{[]string{"demo", "extra"}, 2, `olio demo: unexpected argument "extra"`},
		{[]string{"scale", "3", "--control", nobody}, 1, `olio scale: no olio answers on the control socket ` + nobody}, // flags after N are olio's
		{[]string{"scale", "3", "4", "--control", nobody}, 2, `olio scale: unexpected argument "4" after N`},
		{[]string{"scale", "--control", nobody}, 2, "olio scale: give the number of workers"},
		{[]string{"scale", "--control", nobody, "nine"}, 2, `olio scale: "nine" is not a number of workers`},
		{[]string{"scale", "--control", nobody, "--", "-2"}, 1, `olio scale: no olio answers on the control socket ` + nobody},
		{[]string{"scale", "--control", nobody, "+x"}, 2, `olio scale: "+x" is not a number of workers`},
		{[]string{"scale", "--control", nobody, "3", "-1"}, 2, `olio scale: unexpected argument "-1" after N`},
		{[]string{"scale", "--control", nobody, "3", "--dry-run", "x"}, 2, `olio scale: unexpected argument "x" after N`},
		{[]string{"keys", "--control", nobody, "extra"}, 2, `olio keys: unexpected argument "extra"`},
		{[]string{"keys", "--control", nobody, "--top", "-1"}, 2, "olio keys: --top -1: give 0 (every key) or more"},
		{[]string{"serve", "--key-stats", "names"}, 1, `olio serve: invalid configuration: --key-stats "names": use on`},
		{[]string{"serve", "--config", config(`{"key-stats": "maybe"}`)}, 1, `--key-stats "maybe" (from config file `},
		{serve("./app", "--workers", "3"), 2, `olio serve: --workers after the app "./app" would go to the app, not to olio; put olio's flags first and the app after --`},
		// --timeout
		{[]string{"status", "--control", nobody, "--timeout", "0"}, 2, "olio status: --timeout 0s: must be more than 0"},
		{[]string{"reload", "--control", nobody, "--timeout", "-1s"}, 2, "olio reload: --timeout -1s: must be more than 0"},
		{[]string{"scale", "--control", nobody, "--timeout", "0", "2"}, 2, "olio scale: --timeout 0s: must be more than 0"},
		{[]string{"stop", "--control", nobody, "--timeout", "0"}, 2, "olio stop: --timeout 0s: must be more than 0"},
		// serve
		{serve("--log-format", "xml", "--log-file", logFile), 2, `olio serve: --log-format "xml": use text or json`},
		{serve("--secret", "x", "--secret-file", secretFile), 1, "olio serve: the secret is given twice, by --secret and by --secret-file; give only one"},
		// the config file
		{serve("--config", config(`{"log-format": "json"}`)), 1, `: "log-format" can only be given as a flag`},
		{serve("--config", config(`{"log-file": "x.log"}`)), 1, `: "log-file" can only be given as a flag`},
		{serve("--config", config(`{"config": "other.json"}`)), 1, `: "config" can only be given as a flag`},
		{serve("--config", config(`{"upgrade": true}`)), 1, `: unknown key "upgrade"`},
		{serve("--config", config(`{"help": true}`)), 1, `: unknown key "help"`},
		{serve("--config", config(`{"wrokers": 2}`)), 1, `: unknown key "wrokers"`},
		{serve("--config", config(`{"max-conns": "two"}`)), 1, `: "max-conns": "two" is not a whole number`},
		{serve("--config", config(`{"max-conns": 1e9}`)), 1, `: "max-conns": 1e9 is not a whole number`},
		{serve("--config", config(`{"idle-timeout": 10}`)), 1, `: "idle-timeout": 10 has no unit; durations are strings like "10s"`},
		{serve("--config", config(`{"idle-timeout": "soon"}`)), 1, `: "idle-timeout": "soon" is not a duration`},
		{serve("--config", config(`{"handoff": "maybe"}`)), 1, `: "handoff": "maybe" is not true or false`},
		{serve("--drain-delay", "5"), 2, `invalid value "5" for --drain-delay: durations need a unit, like 10s`},
		{serve("--config", config(`{"key": ["a"]}`)), 1, `: "key": ["a"] is not a string`},
		{serve("--config", config(`{"app": "./app"}`)), 1, `: "app" must be a list of strings`},
		{serve("--config", config(`{"max-conns": 2,}`)), 1, ": not valid JSON: line 1:"},
		{serve("--config", arrayConfig), 1, "olio serve: config file " + arrayConfig + " must be a JSON object of flag names"},
		{serve("--config", config(`{"secret": "x"}`), "--secret-file", secretFile), 1, `the secret is given twice, by "secret" in config file `},
	} {
		code, stdout, stderr := runOlio(tc.args...)
		what := "olio " + strings.Join(tc.args, " ")
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d", what, code, tc.code)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
			t.Errorf("%s: want one line on stderr, got:\n%s", what, stderr)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: stderr %q, want it to say %q", what, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("%s: wrote to stdout:\n%s", what, stdout)
		}
	}
	if _, err := os.Stat(logFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("olio serve --log-format xml --log-file %s created the log file (%v)", logFile, err)
	}
}

func TestSecretFromEnvAndFile(t *testing.T) {
	t.Setenv("OLIO_SECRET", "from-env")
	code, _, stderr := runOlio("serve", "--workers", "0", "--secret-file", writeFile(t, "secret", "s3cret"))
	if want := "olio serve: the secret is given twice, by $OLIO_SECRET and by --secret-file; give only one\n"; code != 1 || stderr != want {
		t.Errorf("OLIO_SECRET with --secret-file: exit %d, %q; want 1, %q", code, stderr, want)
	}
}

func TestVersion(t *testing.T) {
	_, want, _ := runOlio("version")
	if want != "olio "+version+"\n" {
		t.Errorf("olio version printed %q", want)
	}
	for _, flag := range []string{"--version", "-v"} {
		if code, stdout, stderr := runOlio(flag); code != 0 || stdout != want || stderr != "" {
			t.Errorf("olio %s: exit %d, stdout %q, stderr %q; want 0 and %q", flag, code, stdout, stderr, want)
		}
	}
}

func TestServeHelp(t *testing.T) {
	code, stdout, _ := runOlio("serve", "--help")
	if code != 0 {
		t.Fatalf("olio serve --help: exit %d", code)
	}
	for _, line := range strings.Split(stdout, "\n") {
		if strings.Count(line, "(default:") > 1 {
			t.Errorf("a default shown twice: %q", line)
		}
		if strings.HasPrefix(strings.TrimSpace(line), "--workers") && !strings.Contains(line, "(default: one per CPU)") {
			t.Errorf("--workers does not say its default is one per CPU: %q", line)
		}
		if strings.HasPrefix(strings.TrimSpace(line), "--handoff") && !strings.Contains(line, "--handoff=false") {
			t.Errorf("--handoff does not say how to turn it off: %q", line)
		}
	}
}

// silentControl is a control socket at a fresh path that accepts commands and never
// answers them.
func silentControl(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestControlTimeout(t *testing.T) {
	path := silentControl(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scale", "--control", path, "--timeout", "50ms", "2"},
			"olio scale: no answer within 50ms from the control socket " + path + "; the command may still have taken effect, or take effect once the reload, scale or upgrade in progress has finished: check olio status --control " + path + "\n"},
		{[]string{"reload", "--control", path, "--timeout", "50ms"},
			"olio reload: no answer within 50ms from the control socket " + path + "; the command may still have taken effect, or take effect once the reload, scale or upgrade in progress has finished: check olio status --control " + path + "\n"},
		{[]string{"status", "--control", path, "--timeout", "50ms"},
			"olio status: no answer within 50ms from the control socket " + path + "; olio may be busy: try a longer --timeout\n"},
		{[]string{"stop", "--control", path, "--timeout", "50ms"},
			"olio stop: no answer within 50ms from the control socket " + path + "; olio may be busy: try a longer --timeout\n"},
	} {
		code, stdout, stderr := runOlio(tc.args...)
		if code != 1 || stderr != tc.want || stdout != "" {
			t.Errorf("olio %s: exit %d, stdout %q, stderr %q; want 1 and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
}

// serveConfig parses serve's command line and returns configFrom's answer.
func serveConfig(t *testing.T, args ...string) (listener.Config, error) {
	t.Helper()
	cmd := serveCommand()
	var cfg listener.Config
	var err error
	cmd.Action = func(c *cli.Context) error { cfg, err = configFrom(c); return nil }
	app := &cli.App{Name: "olio", Flags: []cli.Flag{globalControlFlag()}, Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
	if i := slices.Index(args, "serve"); i >= 0 { // global flags first: olio --control PATH serve …
		args = append(args[:i:i], args[i+1:]...)
		if e := app.Run(append(append([]string{"olio"}, args[:i]...), append([]string{"serve"}, args[i:]...)...)); e != nil {
			t.Fatalf("olio %v: %v", args, e)
		}
		return cfg, err
	}
	if e := app.Run(append([]string{"olio", "serve"}, args...)); e != nil {
		t.Fatalf("olio serve %v: %v", args, e)
	}
	return cfg, err
}

func TestConfigFile(t *testing.T) {
	path := writeFile(t, "olio.json", `{
		"workers": 3, "max-conns": "7", "forward-timeout": "5s", "handoff": false,
		"control": "/run/x.sock", "metrics": "127.0.0.1:9999", "pidfile": "/run/x.pid",
		"secret": 12345, "app": ["/bin/app", "--flag"], "cluster-addr": "lb.internal:80", "drain-delay": "4s"
	}`)
	cfg, err := serveConfig(t, "--config", path, "--max-conns", "9")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workers != 3 || cfg.MaxConns != 9 || cfg.ForwardTimeout != 5*time.Second || cfg.Handoff ||
		cfg.Control != "/run/x.sock" || cfg.Metrics != "127.0.0.1:9999" || cfg.PIDFile != "/run/x.pid" ||
		cfg.Secret != "12345" || !reflect.DeepEqual(cfg.App, []string{"/bin/app", "--flag"}) ||
		cfg.ClusterAddr != "lb.internal:80" || cfg.DrainDelay != 4*time.Second {
		t.Errorf("config from the file (and --max-conns 9): %+v", cfg)
	}

	// A bad file is a configuration error, which olio reload reports as such.
	_, err = serveConfig(t, "--config", writeFile(t, "bad.json", `{"workers": "two"}`))
	if !errors.Is(err, listener.ErrConfig) {
		t.Errorf("a bad file: %v, want an ErrConfig", err)
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 workers", 1: "1 worker", 2: "2 workers"} {
		if g := plural(n, "worker"); g != want {
			t.Errorf("plural(%d) = %q, want %q", n, g, want)
		}
	}
}
