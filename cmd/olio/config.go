package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

// configFile is a --config file: a JSON object whose keys are serve's long flag names, plus
// "app". Each value is kept as written, so that a message can quote it as the operator
// wrote it ("workers": 1e9, not 1e+09).
type configFile struct {
	path   string
	values map[string]json.RawMessage
}

// flagOnly says whether name is one of serve's flags that take effect before the config
// file is read, or that name it (serveOnlyFlags): the file cannot set them.
func flagOnly(name string) bool {
	for _, f := range serveOnlyFlags() {
		if vf, ok := f.flag.(cli.VisibleFlag); ok && vf.IsVisible() && f.flag.Names()[0] == name {
			return true
		}
	}
	return false
}

// configError is a bad configuration, most often in the config file (then its message
// names the file). It is a listener.ErrConfig, so that olio reload reports it as such.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return listener.ErrConfig }

func (f *configFile) errorf(format string, a ...any) error {
	return &configError{"config file " + f.path + ": " + fmt.Sprintf(format, a...)}
}

// readConfigFile reads the config file at path, whose keys are listener.Settings' names.
func readConfigFile(path string) (*configFile, error) {
	f := &configFile{path: path}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &configError{"config file: " + err.Error()}
	}
	if err := json.Unmarshal(b, &f.values); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			line := 1 + bytes.Count(b[:syntax.Offset], []byte("\n"))
			return nil, f.errorf("not valid JSON: line %d: %v", line, err)
		case errors.As(err, &typ) && typ.Field == "":
			return nil, &configError{fmt.Sprintf("config file %s must be a JSON object of flag names, like {\"workers\": 4}", path)}
		}
		return nil, f.errorf("%v", err)
	}
	if f.values == nil { // the file says null
		return nil, &configError{fmt.Sprintf("config file %s must be a JSON object of flag names, like {\"workers\": 4}", path)}
	}
	for k := range f.values {
		switch {
		case flagOnly(k):
			return nil, f.errorf("%q can only be given as a flag", k)
		case k != "app" && listener.LookupSetting(k) == nil:
			return nil, f.errorf("unknown key %q; keys are olio serve's long flag names", k)
		}
	}
	return f, nil
}

// raw is the value of key as written, compacted to one line; ok is false when the file
// does not set key (or there is no file).
func (f *configFile) raw(key string) (v json.RawMessage, ok bool) {
	if f == nil {
		return nil, false
	}
	v, ok = f.values[key]
	if ok {
		var b bytes.Buffer
		if json.Compact(&b, v) == nil {
			v = b.Bytes()
		}
	}
	return v, ok
}

// sets says whether name's value comes from the file: there, and not given as a flag.
func (f *configFile) sets(c *cli.Context, name string) bool {
	_, ok := f.raw(name)
	return ok && !c.IsSet(name)
}

// value sets *p, a Config field (a *string, *int, *time.Duration or *bool), to key's value.
func (f *configFile) value(key string, p any) (err error) {
	switch p := p.(type) {
	case *string:
		*p, err = f.str(key)
	case *int:
		*p, err = f.num(key)
	case *time.Duration:
		*p, err = f.dur(key)
	case *bool:
		*p, err = f.boolean(key)
	}
	return err
}

// text is a JSON string's contents, or any other value as written.
func text(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// isJSONString says whether v is a string in quotes.
func isJSONString(v json.RawMessage) bool { return len(v) > 0 && v[0] == '"' }

// str is key's value as a string: a string, or a number or boolean as written.
func (f *configFile) str(key string) (string, error) {
	v, _ := f.raw(key)
	switch {
	case len(v) == 0:
		return "", nil
	case v[0] == '{' || v[0] == '[' || string(v) == "null":
		return "", f.errorf("%q: %s is not a string", key, v)
	}
	return text(v), nil
}

// num is key's value as a whole number: 8 or "8".
func (f *configFile) num(key string) (int, error) {
	v, _ := f.raw(key)
	n, err := strconv.Atoi(text(v))
	if err != nil {
		return 0, f.errorf("%q: %s is not a whole number", key, v)
	}
	return n, nil
}

// dur is key's value as a duration: "10s", "1m30s".
func (f *configFile) dur(key string) (time.Duration, error) {
	v, _ := f.raw(key)
	d, err := time.ParseDuration(text(v))
	switch {
	case err == nil:
		return d, nil
	case !isJSONString(v):
		if _, err := strconv.ParseFloat(string(v), 64); err == nil {
			return 0, f.errorf("%q: %s has no unit; durations are strings like \"10s\"", key, v)
		}
	}
	return 0, f.errorf("%q: %s is not a duration like \"10s\" or \"1m30s\"", key, v)
}

// boolean is key's value as true or false.
func (f *configFile) boolean(key string) (bool, error) {
	v, _ := f.raw(key)
	b, err := strconv.ParseBool(text(v))
	if err != nil {
		return false, f.errorf("%q: %s is not true or false", key, v)
	}
	return b, nil
}

// app is the "app" key's command line; nil when the file has none.
func (f *configFile) app() ([]string, error) {
	v, ok := f.raw("app")
	if !ok {
		return nil, nil
	}
	var app []string
	if err := json.Unmarshal(v, &app); err != nil {
		return nil, f.errorf("\"app\" must be a list of strings, the command line, like [\"./app\", \"--flag\"]")
	}
	return app, nil
}
