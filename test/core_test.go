package test

import (
	"fmt"
	"testing"
)

func TestKeysStayOnTheirOwner(t *testing.T) {
	c := Start(t, "--workers", "4")
	for i := 0; i < 120; i++ {
		key := fmt.Sprintf("user-%d", i)
		a, err := c.GetKey(key)
		if err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		if g, e := a.Index, Owner(key, 4); g != e {
			t.Errorf("key %s answered by worker %d, owner is %d", key, g, e)
		}
	}
}
