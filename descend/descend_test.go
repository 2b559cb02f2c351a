package descend

import (
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The wire names are the protocol: changing one breaks a hot upgrade between versions.
func TestTypesPinned(t *testing.T) {
	want := map[Type]string{
		TypeHello: "hello", TypeConfig: "config", TypeMembership: "membership",
		TypeState: "state", TypeRestart: "restart", TypeDrain: "drain",
		TypeStatsRequest: "stats_request", TypeStats: "stats", TypeResult: "result",
		TypePrepare: "prepare", TypeRelease: "release",
		TypeKeysRequest: "keys_request", TypeKeys: "keys", TypeReopen: "reopen",
		TypeRunDir: "run_dir",
	}
	if g, e := len(registry), len(want); g != e {
		t.Fatalf("registry has %d types, test pins %d", g, e)
	}
	for typ, name := range want {
		if string(typ) != name {
			t.Errorf("type %q, want %q", typ, name)
		}
		mk, ok := registry[typ]
		if !ok {
			t.Errorf("type %q not in registry", typ)
			continue
		}
		if g := mk().Type(); g != typ {
			t.Errorf("registry[%q] makes a %q", typ, g)
		}
	}
	if Version != 1 {
		t.Errorf("Version = %d; bump this test deliberately", Version)
	}
}

func samples() []Message {
	return []Message{
		&Hello{Index: 3, PID: 1234},
		&Config{Index: 1, Key: "header:X-User", Secret: "s3cr3t", AppPath: "/bin/app",
			AppArgs: []string{"-v", "x y"}, ForwardTimeout: 10 * time.Second, CPU: -1},
		&Membership{ID: 7, Epoch: 2, Workers: 3, Peers: []string{"/r/0", "/r/1", "/r/2"}},
		&State{Index: 2, State: StateReady, AppPID: 99, Restarts: 1},
		&Restart{ID: 9},
		&Drain{ID: 10},
		&StatsRequest{ID: 11},
		&Stats{ID: 11, Index: 1, Served: 5, InFlight: 2, AppStarted: time.Unix(100, 0).UTC(),
			Duration: Histogram{Bounds: []float64{0.1, 1}, Counts: []uint64{1, 2}, Count: 2, Sum: 0.5}},
		&Result{ID: 12, Error: "app did not become ready"},
		&Prepare{ID: 13, Epoch: 4, Workers: 5},
		&Release{ID: 14},
		&RunDir{ID: 15, Dir: "/tmp/olio-1-2"},
		&KeysRequest{ID: 13, Top: 5},
		&Keys{ID: 13, Index: 2, Mode: KeyStatsOn, Window: time.Minute, Requests: 100, MaxError: 1,
			Keys: []KeyCount{{Key: "alice", Hash: 1<<63 + 5, Count: 90}, {Key: "bob", Hash: 7, Count: 9}}},
	}
}

func TestRoundTripFrame(t *testing.T) {
	for _, m := range samples() {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%T): %v", m, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %T: got %+v, want %+v", m, got, m)
		}
	}
}

// pair is both ends of a socketpair as Conns.
func pair(t *testing.T) (parent, child *Conn) {
	t.Helper()
	parent, childFile, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	child, err = FileConn(childFile)
	if err != nil {
		t.Fatal(err)
	}
	return parent, child
}

func TestRoundTripSocketpair(t *testing.T) {
	parent, child := pair(t)
	defer parent.Close()
	go func() {
		for _, m := range samples() {
			if err := parent.Send(m); err != nil {
				t.Error(err)
				return
			}
		}
		parent.Close()
	}()
	for i, want := range samples() {
		got, err := child.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("message %d: got %+v, want %+v", i, got, want)
		}
	}
	if _, err := child.Recv(); err != io.EOF {
		t.Errorf("after the parent closed: %v, want io.EOF", err)
	}
	child.Close()
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{`, ErrMalformed},
		{`{"v":2,"type":"hello","body":{}}`, ErrVersion},
		{`{"v":1,"type":"nope","body":{}}`, ErrUnknownType},
		{`{"v":1,"type":"hello"}`, ErrMalformed},
		{`{"v":1,"type":"hello","body":{"index":"x"}}`, ErrMalformed},
	} {
		if _, err := Decode([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("Decode(%s) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestRecvRejectsHugeFrame(t *testing.T) {
	parent, child := pair(t)
	defer parent.Close()
	defer child.Close()
	go parent.c.Write([]byte{0xff, 0xff, 0xff, 0xff})
	if _, err := child.Recv(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Recv = %v, want ErrTooLarge", err)
	}
}

func TestDispatch(t *testing.T) {
	var got uint64
	h := Handlers{TypeRestart: func(m Message) error { got = m.(*Restart).ID; return nil }}
	if err := h.Dispatch(&Restart{ID: 4}); err != nil || got != 4 {
		t.Errorf("Dispatch = %v, got ID %d", err, got)
	}
	if err := h.Dispatch(&Drain{}); !errors.Is(err, ErrNoHandler) || !strings.Contains(err.Error(), "drain") {
		t.Errorf("Dispatch(unhandled) = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range samples() {
		b, _ := Encode(m)
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"type":"stats","body":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %T does not re-encode: %v", m, err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if m2.Type() != m.Type() {
			t.Fatalf("type changed: %s → %s", m.Type(), m2.Type())
		}
	})
}

// Every message with an ID is a Request or a Reply, so that the master can wait for its
// answer without a table of types to keep in step by hand.
func TestEveryIDIsARequestOrAReply(t *testing.T) {
	for typ, mk := range registry {
		m := mk()
		if _, ok := reflect.TypeOf(m).Elem().FieldByName("ID"); !ok {
			continue
		}
		_, req := m.(Request)
		_, rep := m.(Reply)
		if req == rep {
			t.Errorf("%s has an ID: it must be a Request or a Reply (request %v, reply %v)", typ, req, rep)
		}
	}
}

// A peer that goes away in the middle of a frame's length prefix has closed: Recv says
// io.EOF, as it does between frames (the router takes it for "the master is gone"). One that
// goes away in the middle of a frame's body has cut a message short, which is not a clean EOF.
func TestRecvCutShort(t *testing.T) {
	for _, tc := range []struct {
		name, sent string
		eof        bool
	}{
		{"in the length", "\x00\x00", true},
		{"in the body", "\x00\x00\x00\x10{\"v\"", false},
	} {
		a, b := net.Pipe()
		go func() {
			io.WriteString(a, tc.sent)
			a.Close()
		}()
		_, err := NewConn(b).Recv()
		b.Close()
		if g := err == io.EOF; g != tc.eof || err == nil {
			t.Errorf("peer gone %s: Recv = %v, want io.EOF: %v", tc.name, err, tc.eof)
		}
	}
}

// A frame of exactly MaxFrame bytes is within the limit on both sides; one byte more is not.
func TestFrameLimitIsInclusive(t *testing.T) {
	one, err := Encode(&Result{ID: 1, Error: "a"})
	if err != nil {
		t.Fatal(err)
	}
	fits := &Result{ID: 1, Error: strings.Repeat("a", MaxFrame-len(one)+1)}
	b, err := Encode(fits)
	if err != nil || len(b) != MaxFrame {
		t.Fatalf("Encode of a %d-byte frame: %d bytes, %v; want it encoded", MaxFrame, len(b), err)
	}
	if _, err := Encode(&Result{ID: 1, Error: fits.Error + "a"}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encode of a %d-byte frame = %v, want ErrTooLarge", MaxFrame+1, err)
	}

	parent, child := pair(t)
	defer parent.Close()
	sent := make(chan error, 1)
	go func() { sent <- parent.Send(fits) }()
	got, err := child.Recv()
	child.Close() // a Send still writing (the frame was refused) fails rather than blocks
	if err != nil || !reflect.DeepEqual(got, fits) {
		t.Errorf("Recv of a %d-byte frame: %v", MaxFrame, err)
	}
	select {
	case err := <-sent:
		if err != nil {
			t.Errorf("Send of a %d-byte frame: %v", MaxFrame, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Send of a %d-byte frame still blocked 10s after its reader closed", MaxFrame)
	}
}
