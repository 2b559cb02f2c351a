package listener

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
)

// notSettings are the Config fields that no flag sets: the master's caller fills them.
var notSettings = []string{"App", "AppDir", "RunDir", "Sources"}

// Every setting is declared whole: a name (its flag and config-file key), help, a Config
// field of a kind a flag carries, a default of that kind, a check, what a reload does with
// it, and, when it reaches the routers as it is, the descend.Config field it lands in. And
// every Config field a flag sets is some setting's: none is set up by hand elsewhere.
func TestEverySettingIsDeclaredWhole(t *testing.T) {
	names, fields := map[string]bool{}, map[string]string{}
	kinds := []reflect.Type{reflect.TypeOf(""), reflect.TypeOf(0), reflect.TypeOf(false), reflect.TypeOf(time.Duration(0))}
	rc := reflect.TypeOf(descend.Config{})
	for i := range Settings {
		s := &Settings[i]
		if s.Name == "" || names[s.Name] || s.Usage == "" {
			t.Errorf("setting %d %q: a setting needs a name of its own and a usage", i, s.Name)
		}
		names[s.Name] = true
		if s.Field == nil {
			t.Errorf("%s: no Field", s.Name)
			continue
		}
		field := s.fieldName()
		if other, ok := fields[field]; ok {
			t.Errorf("%s and %s both set Config.%s", other, s.Name, field)
		}
		fields[field] = s.Name
		typ := reflect.TypeOf(s.Field(&Config{})).Elem()
		if !slices.Contains(kinds, typ) {
			t.Errorf("%s: Config.%s is a %s, which no flag carries", s.Name, field, typ)
		}
		if s.Default != nil && reflect.TypeOf(s.Default) != typ {
			t.Errorf("%s: the default %v is a %T, Config.%s a %s", s.Name, s.Default, s.Default, field, typ)
		}
		if s.Check == nil {
			t.Errorf("%s: no Check (anyValue when any value will do)", s.Name)
		}
		if s.Reload < Applied || s.Reload > KeptForRestart {
			t.Errorf("%s: does a reload apply it? Reload is %d", s.Name, s.Reload)
		}
		switch f, ok := rc.FieldByName(field); {
		case s.Router == Verbatim && (!ok || f.Type != typ):
			t.Errorf("%s reaches the routers as it is, but descend.Config has no %s %s field", s.Name, field, typ)
		case s.Router == MasterOnly && ok:
			t.Errorf("%s stays with the master, but descend.Config has a %s field: is it Verbatim?", s.Name, field)
		}
	}
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		if name := ct.Field(i).Name; fields[name] == "" && !slices.Contains(notSettings, name) {
			t.Errorf("Config.%s is not in Settings: declare it there, with its flag and what a reload does with it", name)
		}
	}
}

// unusual is a value of v's kind that is not v, nor any default: the i-th setting's.
func unusual(v any, i int) any {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("unusual-%d", i)
	case int:
		return 7000 + i
	case time.Duration:
		return time.Duration(i+1)*time.Hour + 7*time.Millisecond
	case bool:
		return !v
	}
	panic(fmt.Sprintf("a %T", v))
}

// routerSees is the descend.Config a router receives for worker 3 when the master runs cfg:
// routerConfig's message, through the descend wire.
func routerSees(t *testing.T, cfg Config) *descend.Config {
	t.Helper()
	b, err := descend.Encode(bareMaster().routerConfig(cfg, 3))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := descend.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*descend.Config)
}

// A setting that reaches the routers as it is gets there by being declared Verbatim, and by
// nothing else: with its row, the value the master runs is what a router receives; without
// it, nothing carries it.
func TestDeclaringASettingIsEnoughToReachTheRouter(t *testing.T) {
	cfg := DefaultConfig()
	var verbatim []*Setting
	for i := range Settings {
		if s := &Settings[i]; s.Router == Verbatim {
			verbatim = append(verbatim, s)
			reflect.ValueOf(s.Field(&cfg)).Elem().Set(reflect.ValueOf(unusual(s.Value(&cfg), i)))
		}
	}
	if len(verbatim) == 0 {
		t.Fatal("no Verbatim setting: the test did not test anything")
	}
	got := reflect.ValueOf(routerSees(t, cfg)).Elem()
	for _, s := range verbatim {
		if g, e := got.FieldByName(s.fieldName()).Interface(), s.Value(&cfg); g != e {
			t.Errorf("%s: the router got %v, the master runs %v", s.Name, g, e)
		}
	}

	all := Settings
	t.Cleanup(func() { Settings = all })
	for _, s := range verbatim {
		Settings = slices.DeleteFunc(slices.Clone(all), func(o Setting) bool { return o.Name == s.Name })
		if g := reflect.ValueOf(routerSees(t, cfg)).Elem().FieldByName(s.fieldName()); !g.IsZero() {
			t.Errorf("without its row in Settings, %s still reaches the router (as %v): something copies it by hand", s.Name, g)
		}
	}
}

// The Derived settings reach the router as what is made of them.
func TestDerivedSettingsReachTheRouter(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CPUAffinity, cfg.AccessLog = true, "/var/log/olio/access.log"
	got := routerSees(t, cfg)
	if got.CPU != 3 || got.AccessLog != cfg.AccessLog || got.PublicAddr != "127.0.0.1:8080" {
		t.Errorf("router config %+v: want CPU 3 (worker 3 with --cpu-affinity), the access log %s and the bound address", got, cfg.AccessLog)
	}
	cfg.CPUAffinity = false
	if got := routerSees(t, cfg); got.CPU != -1 {
		t.Errorf("CPU %d without --cpu-affinity, want -1", got.CPU)
	}
}

// A reload keeps the running value of the settings it cannot change, and says which of
// those it was asked to change, and which reach the routers only when they restart.
func TestReloadFollowsSettings(t *testing.T) {
	old := DefaultConfig()
	cfg := old
	for i := range Settings {
		if s := &Settings[i]; !s.Secret {
			reflect.ValueOf(s.Field(&cfg)).Elem().Set(reflect.ValueOf(unusual(s.Value(&cfg), i)))
		}
	}
	kept := keepRunning(old, cfg)
	m := bareMaster()
	notes := m.notApplied(old, cfg)
	for i := range Settings {
		s := &Settings[i]
		if s.Secret {
			continue
		}
		want := s.Value(&cfg)
		if s.Reload == KeptForRestart || s.Reload == KeptForUpgrade {
			want = s.Value(&old)
		}
		if s.Value(&kept) != want {
			t.Errorf("%s (reload %d): after a reload %v, want %v", s.Name, s.Reload, s.Value(&kept), want)
		}
		noted := slices.ContainsFunc(notes, func(n string) bool {
			return n == fmt.Sprintf("%s %q → %q needs %s", s.Name, fmt.Sprint(s.Value(&old)), fmt.Sprint(s.Value(&cfg)), s.Reload.needs())
		})
		if noted != (s.Reload != Applied) {
			t.Errorf("%s (reload %d): said not applied: %v; notes %q", s.Name, s.Reload, noted, notes)
		}
	}
}
