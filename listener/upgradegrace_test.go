package listener

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUpgradeGraceBelowForwardTimeout(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.UpgradeGrace = 0
	if err := c.Validate(); err != nil {
		t.Fatalf("--upgrade-grace 0: %v", err)
	}
	for _, g := range []time.Duration{c.ForwardTimeout, c.ForwardTimeout + time.Second, -time.Second} {
		c.UpgradeGrace = g
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--upgrade-grace") {
			t.Errorf("--upgrade-grace %s with --forward-timeout %s: %v, want a config error naming --upgrade-grace", g, c.ForwardTimeout, err)
		}
	}
}
