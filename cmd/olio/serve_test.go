package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

// other is a value of v's kind that is not v: what a test gives a setting, as a flag's
// text and as the config file's JSON.
func other(v any) (value any, flag, inFile string) {
	switch v := v.(type) {
	case string:
		return v + "-other", v + "-other", fmt.Sprintf("%q", v+"-other")
	case int:
		return v + 7, fmt.Sprint(v + 7), fmt.Sprint(v + 7)
	case time.Duration:
		d := v + 7*time.Second
		return d, d.String(), fmt.Sprintf("%q", d)
	case bool:
		return !v, fmt.Sprint(!v), fmt.Sprint(!v)
	}
	panic(fmt.Sprintf("a %T", v))
}

// Every setting in listener.Settings is a flag of olio serve, whose default is the
// setting's, and a key of the config file; each sets the setting, the flag over the file.
func TestEverySettingIsAFlagAndAConfigKey(t *testing.T) {
	d := listener.DefaultConfig()
	d.Control = defaultControl()
	defaults, err := serveConfig(t)
	if err != nil {
		t.Fatal(err)
	}
	flags := serveCommand().Flags
	for i := range listener.Settings {
		s := &listener.Settings[i]
		if f := lookupFlag(flags, s.Name); f == nil {
			t.Errorf("--%s: no such flag", s.Name)
			continue
		}
		if g, e := s.Value(&defaults), s.Value(&d); g != e && s.EnvVars == nil {
			t.Errorf("--%s defaults to %v, the setting to %v", s.Name, g, e)
		}
		want, flag, inFile := other(s.Value(&d))
		cfg, err := serveConfig(t, "--"+s.Name+"="+flag)
		if err != nil || s.Value(&cfg) != want {
			t.Errorf("--%s=%s: %v (%v), want %v", s.Name, flag, s.Value(&cfg), err, want)
		}
		path := writeFile(t, "olio.json", fmt.Sprintf(`{%q: %s}`, s.Name, inFile))
		cfg, err = serveConfig(t, "--config", path)
		if err != nil || s.Value(&cfg) != want || cfg.Sources[s.Name] != "config file "+path {
			t.Errorf(`config file {%q: %s}: %v (%v), sources %v; want %v from the file`, s.Name, inFile, s.Value(&cfg), err, cfg.Sources, want)
		}
		cfg, err = serveConfig(t, "--config", path, "--"+s.Name+"="+fmt.Sprint(s.Value(&d)))
		if err != nil || s.Value(&cfg) != s.Value(&d) || cfg.Sources[s.Name] != "" {
			t.Errorf("--%s over the config file: %v (%v), want %v from the flag", s.Name, s.Value(&cfg), err, s.Value(&d))
		}
	}
}

// A setting's environment variable sets it when no flag does.
func TestSettingsFromTheEnvironment(t *testing.T) {
	tested := false
	for i := range listener.Settings {
		s := &listener.Settings[i]
		for _, env := range s.EnvVars {
			want, text, _ := other(s.Value(&listener.Config{}))
			t.Setenv(env, text)
			cfg, err := serveConfig(t)
			if err != nil || s.Value(&cfg) != want {
				t.Errorf("$%s=%s: --%s is %v (%v), want %v", env, text, s.Name, s.Value(&cfg), err, want)
			}
			os.Unsetenv(env)
			tested = true
		}
	}
	if !tested {
		t.Fatal("no setting has an environment variable: the test did not test anything")
	}
}

// The README's table of olio serve's flags documents every setting.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `") {
			first, _, _ := strings.Cut(line[1:], "|") // the row's first cell: `--NAME VALUE`, or `$ENV` / `--NAME VALUE`
			for _, f := range strings.Fields(strings.ReplaceAll(first, "`", " ")) {
				rows[f] = true
			}
		}
	}
	for i := range listener.Settings {
		if name := listener.Settings[i].Name; !rows["--"+name] {
			t.Errorf("README.md has no row for --%s", name)
		}
	}
}

// The config file takes the settings' names and "app", refuses the flags that only a
// command line can give, and refuses other keys.
func TestConfigFileKeys(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // in the error; "" for none
	}{
		{"workers", ""},
		{"app", ""},
		{"log-format", `"log-format" can only be given as a flag`},
		{"upgrade", `unknown key "upgrade"`},
		{"help", `unknown key "help"`},
		{"worker", `unknown key "worker"`},
	} {
		value := json.RawMessage(`"4"`)
		if tc.key == "app" {
			value = json.RawMessage(`["./app"]`)
		}
		b, _ := json.Marshal(map[string]json.RawMessage{tc.key: value})
		_, err := readConfigFile(writeFile(t, "olio.json", string(b)))
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("key %q: %v, want %q", tc.key, err, tc.want)
		}
	}
}
