package mux

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// The frame scan is a second reader of yamux's wire: it is checked against yamux itself.
// Many streams carry data of random sizes both ways (windows fill and are updated, frames
// split across reads anywhere), then a random set of them is closed by one side or the
// other. Each side's scan must mark exactly the streams the other side closed: by the time
// yamux reports a stream's end to a reader (EOF), the scan has marked it, and a stream its
// peer left open is never marked.
func TestStreamSetScanAgreesWithYamux(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "peer.sock")
	l := listen(t, path)
	p := newPool(t, path)
	rng := rand.New(rand.NewPCG(1, 2))
	type notifier interface{ OnPeerClose(func()) }
	type pair struct {
		c        *Stream
		s        net.Conn
		notified atomic.Bool
		size     int
		closer   int // 0: nobody, 1: the client (Pool side), 2: the server (Listener side)
	}
	const n = 60
	pairs := make([]*pair, n)
	for i := range pairs {
		c, err := p.Open(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		pr := &pair{c: c.(*Stream), s: s, size: rng.IntN(300 << 10), closer: rng.IntN(3)}
		s.(notifier).OnPeerClose(func() { pr.notified.Store(true) })
		pairs[i] = pr
	}
	// Every stream carries its data both ways at once (an echo on the server side).
	var wg sync.WaitGroup
	for _, pr := range pairs {
		wg.Add(3)
		go func() {
			defer wg.Done()
			io.CopyN(pr.s, pr.s, int64(pr.size))
		}()
		go func() {
			defer wg.Done()
			pr.c.Write(bytes.Repeat([]byte{yamuxFlagFIN | yamuxFlagRST}, pr.size)) // flag bits in bodies mean nothing
		}()
		go func() {
			defer wg.Done()
			io.CopyN(io.Discard, pr.c, int64(pr.size))
		}()
	}
	waitGroupOrFail(t, &wg, "the streams' data to go both ways")
	for _, pr := range pairs {
		switch pr.closer {
		case 1:
			pr.c.Close()
		case 2:
			pr.s.Close()
		}
	}
	// A reader sees each close as EOF; by then the scan has marked it.
	for i, pr := range pairs {
		switch pr.closer {
		case 1:
			pr.s.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := pr.s.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("stream %d: server read after the client's close: %v", i, err)
			}
			if !pr.notified.Load() {
				t.Errorf("stream %d: the client closed it, yamux said EOF, the scan did not mark it", i)
			}
		case 2:
			pr.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := pr.c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("stream %d: client read after the server's close: %v", i, err)
			}
			if !pr.c.PeerClosed() {
				t.Errorf("stream %d: the server closed it, yamux said EOF, the scan did not mark it", i)
			}
		}
	}
	// The frames of every close have been read (each was seen above, and yamux reads in
	// order): a stream its peer left open is not marked.
	for i, pr := range pairs {
		if pr.closer != 1 && pr.notified.Load() {
			t.Errorf("stream %d (closer %d): marked closed on the server side, the client did not close it", i, pr.closer)
		}
		if pr.closer != 2 && pr.c.PeerClosed() {
			t.Errorf("stream %d (closer %d): marked closed on the client side, the server did not close it", i, pr.closer)
		}
	}
	for _, pr := range pairs {
		pr.c.Close()
		pr.s.Close()
	}
}

// waitGroupOrFail waits for wg, failing the test after 20s.
func waitGroupOrFail(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("waited 20s for %s", what)
	}
}

// A stream entered after its session's end (accepted as the session's reads failed) is
// over at once: whoever asks to be told of its end is told.
func TestStreamSetEnterAfterEnd(t *testing.T) {
	ss := newStreamSet(true)
	ss.endAll()
	told := false
	ss.enter(7).onEnd(func() { told = true })
	if !told {
		t.Error("a stream entered after the session ended was not told of its end")
	}
	if len(ss.ends) != 0 {
		t.Errorf("the ended session's set keeps %d streams", len(ss.ends))
	}
}
