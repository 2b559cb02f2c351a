package harness

import "testing"

func TestFieldBytes(t *testing.T) {
	status := "Name:\tolio\nVmRSS:\t   14336 kB\nRssAnon:\t    6144 kB\nThreads:\t6\n"
	if g, err := fieldBytes(status, "VmRSS"); err != nil || g != 14336<<10 {
		t.Errorf("VmRSS = %d, %v; want %d", g, err, 14336<<10)
	}
	if g, err := fieldBytes(status, "RssAnon"); err != nil || g != 6144<<10 {
		t.Errorf("RssAnon = %d, %v; want %d", g, err, 6144<<10)
	}
	if _, err := fieldBytes(status, "VmSwap"); err == nil {
		t.Error("a missing field gave no error")
	}
	if _, err := fieldBytes(status, "Threads"); err == nil {
		t.Error("a field without kB gave no error")
	}
}

func TestField(t *testing.T) {
	status := "Name:\tolio\nThreads:\t6\n"
	if g, err := field(status, "Threads"); err != nil || g != "6" {
		t.Errorf("Threads = %q, %v; want 6", g, err)
	}
	if _, err := field(status, "Thread"); err == nil {
		t.Error("a missing field gave no error")
	}
}
