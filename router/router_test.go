package router

import (
	"context"
	"errors"
	"testing"
)

// The hooks a Server calls are its own fields and those the deprecated package functions
// were given, so that services built on OnHandover and RegisterOnShutdown keep working.
func TestServerHooks(t *testing.T) {
	t.Cleanup(func() { hooks.handover, hooks.shutdown = nil, nil })
	var got []string
	OnHandover(func(context.Context, Handover) error { got = append(got, "global"); return errors.New("global failed") })
	RegisterOnShutdown(func() { got = append(got, "global stop") })
	s := &Server{
		OnHandover: func(context.Context, Handover) error { got = append(got, "field"); return nil },
		OnShutdown: func() { got = append(got, "field stop") },
	}
	for _, f := range s.handoverHooks() {
		f(context.Background(), Handover{})
	}
	for _, f := range s.shutdownHooks() {
		f()
	}
	want := []string{"global", "field", "global stop", "field stop"}
	if len(got) != len(want) {
		t.Fatalf("hooks called: %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hooks called: %q, want %q", got, want)
		}
	}
	// The zero Server has no hooks of its own.
	hooks.handover, hooks.shutdown = nil, nil
	if n := len((&Server{}).handoverHooks()) + len((&Server{}).shutdownHooks()); n != 0 {
		t.Errorf("a zero Server has %d hooks", n)
	}
}
