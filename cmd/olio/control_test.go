package main

import (
	"strings"
	"testing"

	"github.com/olio-dev/olio/listener"
)

func TestWriteStatus(t *testing.T) {
	st := &listener.Status{
		PID: 100, Listen: "127.0.0.1:8080", Members: 2, Ready: 1, Epoch: 3, UptimeSeconds: 3725,
		Workers: []listener.WorkerStatus{
			{Index: 0, RouterPID: 101, AppPID: 102, State: "ready", UptimeSeconds: 61, Restarts: 1,
				RSSBytes: 30 << 20, InFlight: 2, Served: 1000, Forwarded: 500, Member: true},
			{Index: 1, RouterPID: 103, State: "backoff", Restarts: 7, RSSBytes: 512 << 10,
				Served: 24, Forwarded: 1, Member: true, CrashLooping: true},
			{Index: 2, RouterPID: 104, AppPID: 105, State: "starting", Error: "worker 2: context deadline exceeded"},
		},
	}
	var b strings.Builder
	if err := writeStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	want := `olio pid 100 on 127.0.0.1:8080: 2 workers, 1 ready, epoch 3, up 1h02m

WORKER  ROUTER PID  APP PID  STATE                    UPTIME  RESTARTS  RSS        IN-FLIGHT  SERVED  FORWARDED
0       101         102      ready                    1m01s   1         30.0 MiB   2          1000    500
1       103         -        backoff (crash-looping)  -       7         512.0 KiB  0          24      1
2       104         105      starting*!               -       0         -          0          0       0
TOTAL                                                         8         30.5 MiB   2          1024    501

* not a member (joining or leaving): owns no keys
! worker 2 sent no counters (worker 2: context deadline exceeded)
`
	if g := b.String(); g != want {
		t.Errorf("got:\n%s\nwant:\n%s", g, want)
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		sec  float64
		want string
	}{
		{0, "-"}, {0.4, "0s"}, {1, "1s"}, {59.9, "59s"}, {60, "1m00s"}, {3599, "59m59s"},
		{3600, "1h00m"}, {86399, "23h59m"}, {86400, "1d00h"}, {90061, "1d01h"},
	} {
		if g := duration(c.sec); g != c.want {
			t.Errorf("duration(%v) = %q, want %q", c.sec, g, c.want)
		}
	}
}

func TestBytesIEC(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want string
	}{
		{0, "-"}, {1, "0.0 KiB"}, {1536, "1.5 KiB"}, {1 << 20, "1.0 MiB"}, {27394048, "26.1 MiB"}, {3 << 30, "3.0 GiB"},
	} {
		if g := bytesIEC(c.n); g != c.want {
			t.Errorf("bytesIEC(%d) = %q, want %q", c.n, g, c.want)
		}
	}
}

// olio scale's argument: N is a count, +N and -N a step; anything else is refused, and
// "+1" is never read as the count 1.
func TestScaleArg(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want scaleTarget
		err  string
	}{
		{"3", scaleTarget{n: 3}, ""},
		{"0", scaleTarget{n: 0}, ""},
		{"+1", scaleTarget{n: 1, relative: true}, ""},
		{"-1", scaleTarget{n: -1, relative: true}, ""},
		{"+12", scaleTarget{n: 12, relative: true}, ""},
		{"-0", scaleTarget{n: 0, relative: true}, ""},
		{"+", scaleTarget{}, "is not a number of workers"},
		{"+-1", scaleTarget{}, "is not a number of workers"},
		{"++1", scaleTarget{}, "is not a number of workers"},
		{"1.5", scaleTarget{}, "is not a number of workers"},
		{" 1", scaleTarget{}, "is not a number of workers"},
		{"nine", scaleTarget{}, "is not a number of workers"},
		{"2000", scaleTarget{}, "at most 1024"},
		{"-2000", scaleTarget{}, "at most 1024"},
	} {
		got, err := scaleArg([]string{c.arg})
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("scaleArg(%q) = %+v, %v; want %+v", c.arg, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("scaleArg(%q) = %+v, %v; want an error saying %q", c.arg, got, err, c.err)
		}
	}
}
