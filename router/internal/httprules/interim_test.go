package httprules

import "testing"

func TestHasToken(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want bool
	}{
		{[]string{"Upgrade"}, true},
		{[]string{"keep-alive, upgrade"}, true},
		{[]string{"keep-alive", " UPGRADE "}, true},
		{[]string{"keep-alive"}, false},
		{[]string{"upgraded"}, false},
		{nil, false},
	} {
		if g := HasToken(c.in, "upgrade"); g != c.want {
			t.Errorf("HasToken(%q) = %v, want %v", c.in, g, c.want)
		}
	}
}
