package mux

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"
)

// waitFor polls cond until it holds, or fails the test after 10s saying what it waited for.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval of a condition wait
	}
}

// A stream the peer closes, or resets, says PeerClosed once the frame has come, without a
// read; one still open does not; one of a session that ended does.
func TestStreamPeerClosed(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "peer.sock")
	l, p, c, sc, _ := accepted(t, ctx, path)
	roundTrip(t, c, "") // nothing: the stream is open both ways
	other, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	osc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer osc.Close()
	// A byte both ways on the other stream: its data frames go through the scan.
	if _, err := other.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := osc.Read(b); err != nil {
		t.Fatal(err)
	}
	if _, err := osc.Write(bytes.Repeat([]byte("y"), 100<<10)); err != nil {
		t.Fatal(err)
	}
	if c.(*Stream).PeerClosed() || other.(*Stream).PeerClosed() {
		t.Fatal("an open stream says PeerClosed")
	}
	sc.Close()
	waitFor(t, "the peer's close to be seen", c.(*Stream).PeerClosed)
	if other.(*Stream).PeerClosed() {
		t.Error("closing one stream marked another")
	}
	p.Close()
	if !other.(*Stream).PeerClosed() {
		t.Error("a stream of a closed session does not say PeerClosed")
	}
}

// The receive side's scan follows frames split anywhere, and marks only the streams whose
// frame carries FIN or RST.
func TestStreamSetScan(t *testing.T) {
	frame := func(typ uint8, flags uint16, id uint32, body []byte, length uint32) []byte {
		h := make([]byte, yamuxHeaderSize)
		h[1] = typ
		binary.BigEndian.PutUint16(h[2:4], flags)
		binary.BigEndian.PutUint32(h[4:8], id)
		binary.BigEndian.PutUint32(h[8:12], length)
		return append(h, body...)
	}
	body := bytes.Repeat([]byte{yamuxFlagFIN}, 40) // FIN bits inside a body mean nothing
	var wire []byte
	wire = append(wire, frame(yamuxTypeData, 0, 3, body, uint32(len(body)))...)
	wire = append(wire, frame(1, yamuxFlagFIN, 5, nil, 0)...) // window update, FIN
	wire = append(wire, frame(2, 0, 0, nil, 7)...)            // ping: its length is no body
	wire = append(wire, frame(yamuxTypeData, yamuxFlagRST, 7, nil, 0)...)
	wire = append(wire, frame(yamuxTypeData, 0, 9, []byte("ok"), 2)...)
	for _, step := range []int{1, 5, 12, 13, len(wire)} {
		ss := newStreamSet(false)
		ends := map[uint32]*streamEnd{}
		for _, id := range []uint32{3, 5, 7, 9} {
			ends[id] = ss.enter(id)
		}
		for p := wire; len(p) > 0; {
			n := min(step, len(p))
			ss.scan(p[:n])
			p = p[n:]
		}
		for id, want := range map[uint32]bool{3: false, 5: true, 7: true, 9: false} {
			if got := ends[id].ended.Load(); got != want {
				t.Errorf("reads of %d bytes: stream %d closed %v, want %v", step, id, got, want)
			}
		}
		if ss.have != 0 || ss.skip != 0 {
			t.Errorf("reads of %d bytes: the scan ended mid-frame (%d, %d)", step, ss.have, ss.skip)
		}
	}
}

// The watch breaks a stream off once its peer is silent past the watch's time, not while the
// peer is heard from, and not after Unwatch; a stream's timer serves exchange after exchange.
func TestStreamWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.sock")
	g := &gate{}
	stoppablePeer(t, path, g)
	p := silencePool(t, path)
	c, err := p.Open(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.(*Stream)
	for i := 0; i < 3; i++ {
		s.Watch(time.Millisecond, time.Millisecond)
		roundTrip(t, c, "heard")
		time.Sleep(5 * time.Millisecond) // not a wait for anything: the watch's time to look a few times
		if s.Unwatch() {
			t.Fatal("the watch broke off a stream whose peer is heard from")
		}
	}
	s.Watch(time.Hour, time.Hour)
	if s.Unwatch() {
		t.Fatal("an unwatched stream was broken off")
	}

	s.Watch(time.Millisecond, time.Millisecond)
	g.close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // the watch's break comes long before
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("a read on a stream of a silent peer returned a byte")
	}
	if !s.Unwatch() {
		t.Error("Unwatch does not say the watch broke the stream off")
	}
	if !s.PeerSilent() {
		t.Error("broken off while the peer was not silent")
	}
}

// A Listener's stream tells, without a read, when its peer closes it or the session ends:
// at once when asked after the fact.
func TestServerStreamOnPeerClose(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "peer.sock")
	l, p, c, sc, _ := accepted(t, ctx, path)
	type notifier interface{ OnPeerClose(func()) }
	closed := make(chan struct{})
	sc.(notifier).OnPeerClose(func() { close(closed) })
	roundTrip(t, c, "") // nothing yet
	select {
	case <-closed:
		t.Fatal("OnPeerClose fired for an open stream")
	default:
	}
	c.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("OnPeerClose did not fire within 10s of the peer's close")
	}
	late := make(chan struct{})
	sc.(notifier).OnPeerClose(func() { close(late) })
	select {
	case <-late:
	default:
		t.Error("OnPeerClose after the close did not fire at once")
	}

	// The session's end ends its streams.
	c2, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sc2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc2.Close()
	ended := make(chan struct{})
	sc2.(notifier).OnPeerClose(func() { close(ended) })
	p.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("OnPeerClose did not fire within 10s of the session's end")
	}
}
