package monitor

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	short := time.Second
	for i, want := range []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond,
		25600 * time.Millisecond, 30 * time.Second, 30 * time.Second,
	} {
		if got := b.Next(short); got != want {
			t.Fatalf("short run %d: Next = %v, want %v", i+1, got, want)
		}
		if got := b.Failures(); got != i+1 {
			t.Fatalf("Failures = %d, want %d", got, i+1)
		}
	}
	// A stable run resets.
	if got := b.Next(10 * time.Second); got != 100*time.Millisecond || b.Failures() != 0 {
		t.Fatalf("after stable run: Next = %v, Failures = %d", got, b.Failures())
	}
	if got := b.Next(short); got != 100*time.Millisecond || b.Failures() != 1 {
		t.Fatalf("first short run after reset: %v, %d", got, b.Failures())
	}
	b.Next(short)
	b.Reset()
	if b.Failures() != 0 {
		t.Fatal("Reset kept failures")
	}
}

func TestBackoffCustom(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 3 * time.Second, Stable: time.Minute}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		if got := b.Next(59 * time.Second); got != want {
			t.Fatalf("run %d: Next = %v, want %v", i+1, got, want)
		}
	}
	if got := b.Next(time.Minute); got != time.Second || b.Failures() != 0 {
		t.Fatalf("stable: %v %d", got, b.Failures())
	}
	// Max below Min is raised to Min; huge failure counts do not overflow.
	b = Backoff{Min: time.Second, Max: time.Millisecond}
	for range 200 {
		if got := b.Next(0); got != time.Second {
			t.Fatalf("Next = %v, want 1s", got)
		}
	}
}
