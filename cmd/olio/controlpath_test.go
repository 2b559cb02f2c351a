package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The control socket is named by --control after the command, else by --control before
// it, else by $OLIO_CONTROL, else it is olio serve's default; every client command and
// olio serve read it the same way.
func TestControlPathPrecedence(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // the default's directory must be private
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", dir) // the default: dir/olio.sock, a private directory
	env, global, command := filepath.Join(dir, "env.sock"), filepath.Join(dir, "global.sock"), filepath.Join(dir, "command.sock")
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"default", "", []string{"status"}, filepath.Join(dir, "olio.sock")},
		{"environment", env, []string{"status"}, env},
		{"global flag over the environment", env, []string{"--control", global, "status"}, global},
		{"global flag with =", "", []string{"--control=" + global, "keys"}, global},
		{"command flag over both", env, []string{"--control", global, "status", "--control", command}, command},
		{"command flag after the argument", env, []string{"--control", global, "scale", "2", "--control", command}, command},
		{"global flag for scale", "", []string{"--control", global, "scale", "2", "--timeout", "1s"}, global},
		{"environment for stop", env, []string{"stop"}, env},
		{"environment for reload", env, []string{"reload", "-q"}, env},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(controlEnv, tc.env)
			code, _, stderr := runOlio(tc.args...)
			if code != 1 || !strings.Contains(stderr, "no olio answers on the control socket "+tc.want+" ") {
				t.Errorf("olio %s with $OLIO_CONTROL=%q: exit %d, stderr %q; want it to look for %s",
					strings.Join(tc.args, " "), tc.env, code, stderr, tc.want)
			}
		})
	}
}

// olio serve makes its control socket where --control after serve says, else --control
// before it, else $OLIO_CONTROL, else the config file, else the default.
func TestServeControlPrecedence(t *testing.T) {
	file := writeFile(t, "olio.json", `{"control": "/run/file.sock"}`)
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"environment", "/run/env.sock", nil, "/run/env.sock"},
		{"environment over the config file", "/run/env.sock", []string{"--config", file}, "/run/env.sock"},
		{"config file", "", []string{"--config", file}, "/run/file.sock"},
		{"global flag over the environment", "/run/env.sock", []string{"--control", "/run/global.sock", "serve"}, "/run/global.sock"},
		{"command flag over the global flag", "/run/env.sock", []string{"--control", "/run/global.sock", "serve", "--control", "/run/command.sock"}, "/run/command.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(controlEnv, tc.env)
			cfg, err := serveConfig(t, tc.args...)
			if err != nil || cfg.Control != tc.want {
				t.Errorf("olio %v with $OLIO_CONTROL=%q: control %q (%v), want %q", tc.args, tc.env, cfg.Control, err, tc.want)
			}
		})
	}
}

func TestBuildVersion(t *testing.T) {
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true, "v1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "b8747da0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}, true, "devel b8747da01234 (modified)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20250101000000-b8747da01234"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "b8747da0123456789abcdef"}}}, true, "v0.0.0-20250101000000-b8747da01234"},
	} {
		if g := buildVersion(tc.bi, tc.ok); g != tc.want {
			t.Errorf("buildVersion(%+v) = %q, want %q", tc.bi, g, tc.want)
		}
	}
}
