package process

import (
	"bufio"
	"context"
	"encoding/binary"
	"github.com/olio-dev/olio/router/keys"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/router/internal/accesslog"
)

// Upgraded connections under --handover exclusive: a WebSocket whose key leaves this
// process is ended before the key's new owner serves it. The owner (the router whose app
// serves the connection, whether it accepted it, received it by handoff or through a peer
// tunnel) keeps a registry of its live upgraded connections by key and app instance. When
// keys leave (a scale's prepare, a rolling restart's switch, a drain for a replacement) it
// tells the app with the hand-over notice, waits --upgrade-grace, then ends the matching
// connections: a WebSocket gets a close frame with status 1012 ("service restart") written
// between two of the app's frames, then both legs close; any other protocol is closed. The
// accepting router's side follows: its tunnel ends when the owner's stream does.

// closeServiceRestart is the close frame olio writes: FIN + close opcode, a payload of
// status 1012 and a short reason; a server's frame is not masked (RFC 6455 §5.1).
var closeServiceRestart = func() []byte {
	reason := "olio: key moved"
	b := []byte{0x88, byte(2 + len(reason)), 0, 0}
	binary.BigEndian.PutUint16(b[2:], 1012)
	return append(b, reason...)
}()

// endLinger bounds how long an ended connection waits, after its close frame, for the
// client to close its side (the close handshake), and how long the end waits for the
// app's frame in progress to finish before it just closes.
const endLinger = time.Second

// wsFrames follows the framing of one direction of a WebSocket (RFC 6455 §5.2) by its
// headers alone: it knows where each frame ends without reading the payload.
type wsFrames struct {
	hdr  [14]byte // the header being read
	n    int      // its bytes so far
	left uint64   // payload bytes of the current frame still to come
	bad  bool     // not WebSocket framing: boundaries are unknown from here on
}

// boundary reports whether the bytes seen so far end exactly between two frames.
func (f *wsFrames) boundary() bool { return !f.bad && f.n == 0 && f.left == 0 }

// headerLen is the length of the header in hdr, 0 while its first two bytes are not in.
func (f *wsFrames) headerLen() int {
	if f.n < 2 {
		return 0
	}
	l := 2
	switch f.hdr[1] & 0x7f {
	case 126:
		l += 2
	case 127:
		l += 8
	}
	if f.hdr[1]&0x80 != 0 {
		l += 4 // the masking key
	}
	return l
}

// payloadLen is the payload length of the complete header in hdr.
func (f *wsFrames) payloadLen() uint64 {
	switch n := f.hdr[1] & 0x7f; n {
	case 126:
		return uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
	case 127:
		return binary.BigEndian.Uint64(f.hdr[2:10])
	default:
		return uint64(n)
	}
}

// valid reports whether the complete header in hdr is a frame RFC 6455 allows.
func (f *wsFrames) valid() bool {
	op := f.hdr[0] & 0x0f
	switch {
	case op > 2 && op < 8, op > 10: // reserved opcodes
		return false
	case op >= 8 && (f.hdr[0]&0x80 == 0 || f.payloadLen() > 125): // a control frame: whole, short
		return false
	case f.hdr[1]&0x7f == 127 && f.payloadLen()>>63 != 0:
		return false
	}
	return true
}

// advance follows p, the next bytes of the stream. With stop, it stops at the first frame
// boundary in p and returns the bytes before it and true; else it returns len(p) and
// whether p ends on a boundary. Once the framing is not WebSocket's, it follows nothing.
func (f *wsFrames) advance(p []byte, stop bool) (int, bool) {
	i := 0
	for i < len(p) && !f.bad {
		if f.left > 0 {
			k := uint64(len(p) - i)
			if k > f.left {
				k = f.left
			}
			f.left -= k
			i += int(k)
			continue
		}
		if stop && f.n == 0 {
			return i, true
		}
		f.hdr[f.n] = p[i]
		f.n++
		i++
		if l := f.headerLen(); l > 0 && f.n == l {
			if !f.valid() {
				f.bad = true
				break
			}
			f.left, f.n = f.payloadLen(), 0
		}
	}
	if f.bad {
		return len(p), false
	}
	return i, f.boundary()
}

// upgradeTunnel is the app's side of an upgraded connection (the 101 answer's body, which
// switchProtocols copies to the client): it follows the app's frames so that end can put a
// close frame between two of them. A pump reads the app so that a Read waiting for the
// app can be ended.
type upgradeTunnel struct {
	rwc    io.ReadWriteCloser
	ws     bool // a WebSocket: end writes a close frame at a boundary
	frames wsFrames

	chunks  chan []byte   // the pump's reads; closed when the app's side ends
	acks    chan struct{} // a chunk is used up: the pump may read again
	pumpErr error         // why the pump stopped, set before chunks closes
	quit    chan struct{} // closed by Close: the pump stops
	ending  chan struct{} // closed by end
	endOnce sync.Once
	quitter sync.Once

	pending []byte // the rest of the chunk being handed out
	held    bool   // a chunk is out: ack it once used up
	tail    []byte // the close frame, still to hand out
	done    bool   // ended: Read says EOF
	endBy   time.Time
}

func newUpgradeTunnel(rwc io.ReadWriteCloser, ws bool) *upgradeTunnel {
	t := &upgradeTunnel{rwc: rwc, ws: ws, chunks: make(chan []byte), acks: make(chan struct{}),
		quit: make(chan struct{}), ending: make(chan struct{})}
	go t.pump()
	return t
}

// pump reads the app's side and hands each chunk to Read, one at a time.
func (t *upgradeTunnel) pump() {
	buf := make([]byte, 32<<10)
	for {
		n, err := t.rwc.Read(buf)
		if n > 0 {
			select {
			case t.chunks <- buf[:n]:
			case <-t.quit:
				return
			}
			select {
			case <-t.acks:
			case <-t.quit:
				return
			}
		}
		if err != nil {
			t.pumpErr = err
			close(t.chunks)
			return
		}
	}
}

// end asks the tunnel to end: at the app's next frame boundary for a WebSocket (a close
// frame 1012 goes to the client there), at once otherwise.
func (t *upgradeTunnel) end() {
	t.endOnce.Do(func() { close(t.ending) })
}

func (t *upgradeTunnel) isEnding() bool {
	select {
	case <-t.ending:
		return true
	default:
		return false
	}
}

// Read hands out the app's bytes to the client, up to the boundary where an end puts its
// close frame, then EOF. Read is called by one goroutine (switchProtocols' copier).
func (t *upgradeTunnel) Read(p []byte) (int, error) {
	for {
		if len(t.tail) > 0 {
			n := copy(p, t.tail)
			t.tail = t.tail[n:]
			return n, nil
		}
		if t.done {
			return 0, io.EOF
		}
		if len(t.pending) == 0 {
			if t.held {
				t.held = false
				select {
				case t.acks <- struct{}{}:
				case <-t.quit:
					return 0, io.EOF
				}
			}
			ending := t.isEnding()
			if ending && t.endBy.IsZero() {
				t.endBy = time.Now().Add(endLinger)
			}
			if ending && (!t.ws || t.frames.boundary()) {
				t.finish()
				continue
			}
			var endc <-chan struct{}
			var timeout <-chan time.Time
			var tm *time.Timer
			if !ending {
				endc = t.ending
			} else { // inside a frame: wait for its end, within the linger
				tm = time.NewTimer(time.Until(t.endBy))
				timeout = tm.C
			}
			c, ok, why := t.next(endc, timeout)
			if tm != nil {
				tm.Stop()
			}
			switch why {
			case gotChunk:
				if !ok {
					return 0, t.pumpErr
				}
				t.pending, t.held = c, true
			case gotEnd:
				t.endBy = time.Now().Add(endLinger)
				continue
			case gotTimeout:
				t.finish() // the frame did not end in time: no close frame, just close
				continue
			case gotQuit:
				return 0, io.EOF
			}
		}
		ending := t.isEnding()
		if ending && t.endBy.IsZero() {
			t.endBy = time.Now().Add(endLinger)
		}
		n := min(len(p), len(t.pending))
		if !t.ws {
			if ending {
				t.finish()
				continue
			}
			copy(p, t.pending[:n])
			t.pending = t.pending[n:]
			return n, nil
		}
		used, at := t.frames.advance(t.pending[:n], ending)
		if t.frames.bad && ending {
			t.finish() // not WebSocket framing after all: no close frame, just close
			continue
		}
		copy(p, t.pending[:used])
		t.pending = t.pending[used:]
		if ending && at {
			t.finish()
		}
		if used > 0 {
			return used, nil
		}
	}
}

// What next waited for.
const (
	gotChunk = iota
	gotEnd
	gotTimeout
	gotQuit
)

// next waits for the pump's next chunk, endc or timeout.
func (t *upgradeTunnel) next(endc <-chan struct{}, timeout <-chan time.Time) ([]byte, bool, int) {
	select {
	case c, ok := <-t.chunks:
		return c, ok, gotChunk
	case <-endc:
		return nil, false, gotEnd
	case <-timeout:
		return nil, false, gotTimeout
	case <-t.quit:
		return nil, false, gotQuit
	}
}

// finish ends the tunnel: a WebSocket's close frame goes out next, then EOF; the app's
// connection is closed.
func (t *upgradeTunnel) finish() {
	t.done = true
	if t.ws && t.frames.boundary() {
		t.tail = closeServiceRestart
	}
	t.rwc.Close()
}

// Write passes the client's bytes to the app.
func (t *upgradeTunnel) Write(p []byte) (int, error) { return t.rwc.Write(p) }

// Close closes the app's side and stops the pump.
func (t *upgradeTunnel) Close() error {
	t.quitter.Do(func() { close(t.quit) })
	return t.rwc.Close()
}

// liveUpgrade is one upgraded connection this router's app serves.
type liveUpgrade struct {
	hash   uint64    // its key's xxhash64
	keyed  bool      // it has a key
	inst   *instance // the app instance serving it
	ws     bool      // a WebSocket
	tunnel atomic.Pointer[upgradeTunnel]
	client atomic.Pointer[net.Conn] // the client's side, once hijacked
	ended  atomic.Bool              // ended by a hand-over
	gone   chan struct{}            // closed once both sides are closed
}

// endNow ends the connection: the tunnel's close frame and close, then, after the linger
// for the close handshake, the client's side.
func (l *liveUpgrade) endNow() {
	l.ended.Store(true)
	if t := l.tunnel.Load(); t != nil {
		t.end()
	} else if c := l.client.Load(); c != nil {
		(*c).Close()
	}
}

// forceClose closes both sides.
func (l *liveUpgrade) forceClose() {
	if t := l.tunnel.Load(); t != nil {
		t.Close()
	}
	if c := l.client.Load(); c != nil {
		(*c).Close()
	}
}

// upgrades is the registry of a router's live upgraded connections.
type upgrades struct {
	mu    sync.Mutex
	live  map[*liveUpgrade]struct{}
	ended atomic.Uint64 // connections a hand-over ended
	// starting counts the connections between their hijack (the public server no longer
	// waits for them) and their entry here: a drain waits for it before it looks.
	starting sync.WaitGroup
}

// settled waits, until ctx is done, for the connections being entered to be in.
func (u *upgrades) settled(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		u.starting.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (u *upgrades) add(l *liveUpgrade) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.live == nil {
		u.live = make(map[*liveUpgrade]struct{})
	}
	u.live[l] = struct{}{}
}

func (u *upgrades) remove(l *liveUpgrade) {
	u.mu.Lock()
	delete(u.live, l)
	u.mu.Unlock()
	close(l.gone)
}

// matching lists the live connections for which leaves is true.
func (u *upgrades) matching(leaves func(*liveUpgrade) bool) []*liveUpgrade {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*liveUpgrade
	for l := range u.live {
		if leaves(l) {
			out = append(out, l)
		}
	}
	return out
}

// end waits grace (the app has had its notice), ends ls and waits, up to ctx, until they
// are gone; it returns how many it ended.
func (u *upgrades) end(ctx context.Context, ls []*liveUpgrade, grace time.Duration) int {
	if len(ls) == 0 {
		return 0
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	for _, l := range ls {
		l.endNow()
	}
	linger := time.NewTimer(endLinger + 100*time.Millisecond)
	defer linger.Stop()
	n := 0
	for _, l := range ls {
		select {
		case <-l.gone:
		case <-linger.C: // the client keeps its side open: close it
			for _, l := range ls {
				l.forceClose()
			}
			select {
			case <-l.gone:
			case <-ctx.Done():
			}
		case <-ctx.Done():
			l.forceClose()
		}
		if l.ended.Load() {
			n++
		}
	}
	u.ended.Add(uint64(n))
	return n
}

// isWebSocket reports whether h asks for (or switches to) the WebSocket protocol.
func isWebSocket(h http.Header) bool {
	return strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket")
}

// trackUpgrade registers an upgrade request served by inst: its key is this router's
// settings' (a direct address keeps it, the owner of its key decides). It returns the
// entry, req carrying it for answered, and w whose Hijack records the client's side; done
// unregisters it once the request has returned.
func (r *Router) trackUpgrade(w http.ResponseWriter, req *http.Request, inst *instance) (http.ResponseWriter, *http.Request, func()) {
	l := &liveUpgrade{inst: inst, ws: isWebSocket(req.Header), gone: make(chan struct{})}
	if key, ok := r.settings().key.Extract(req); ok {
		l.hash, l.keyed = xxhash.Sum64String(key), true
	}
	r.live.add(l)
	req = req.WithContext(context.WithValue(req.Context(), liveKey{}, l))
	return &hijackRecorder{ResponseWriter: w, l: l}, req, func() {
		if l.ended.Load() {
			markEnded(w)
		}
		r.live.remove(l)
	}
}

// liveKey keys a request's *liveUpgrade in its context.
type liveKey struct{}

// tunnelUpgrade is called on a 101 from the app: the answer's body, the app's side of the
// connection, is followed by an upgradeTunnel, which a hand-over can end.
func tunnelUpgrade(resp *http.Response) {
	l, ok := resp.Request.Context().Value(liveKey{}).(*liveUpgrade)
	if !ok {
		return
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		return
	}
	t := newUpgradeTunnel(rwc, l.ws && isWebSocket(resp.Header))
	l.tunnel.Store(t)
	resp.Body = t
	if l.ended.Load() { // ended between the registration and the answer
		t.end()
	}
}

// hijackRecorder records the client's side of an upgraded connection when it is hijacked.
type hijackRecorder struct {
	http.ResponseWriter
	l *liveUpgrade
}

// Hijack implements http.Hijacker.
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err == nil {
		h.l.client.Store(&c)
	}
	return c, brw, err
}

// Unwrap serves http.ResponseController.
func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// markEnded marks the access log line of w's request (when the log is on) as ended by a
// hand-over.
func markEnded(w http.ResponseWriter) {
	for w != nil {
		if aw, ok := w.(*accesslog.Writer); ok {
			aw.EndedByHandover()
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// endLeaving ends, under --handover exclusive, this router's upgraded connections for
// which leaves is true: it tells nothing itself (the caller's notice does), waits
// --upgrade-grace, ends them, and waits until they are gone, up to ctx.
func (r *Router) endLeaving(ctx context.Context, ls []*liveUpgrade) {
	if len(ls) == 0 {
		return
	}
	start := time.Now()
	n := r.live.end(ctx, ls, r.conf().UpgradeGrace)
	r.logger.Info("hand-over: ended upgraded connections of moving keys", "connections", n, "took", time.Since(start).Round(time.Millisecond).String())
}

// movingUpgrades lists the upgraded connections whose key this router owns under the
// current membership and not under workers.
func (r *Router) movingUpgrades(workers int) []*liveUpgrade {
	cur := r.workers()
	return r.live.matching(func(l *liveUpgrade) bool {
		return l.keyed && keys.Jump(l.hash, cur) == r.index && (workers <= 0 || keys.Jump(l.hash, workers) != r.index)
	})
}

// instanceUpgrades lists the upgraded connections inst serves.
func (r *Router) instanceUpgrades(inst *instance) []*liveUpgrade {
	return r.live.matching(func(l *liveUpgrade) bool { return l.inst == inst })
}

// trackPassing registers a forwarded upgraded connection, back the owner's side and client
// the client's, so that this router's drain can end it at a frame boundary: the client
// reads the owner's side through the returned reader. untrack, once the tunnel is done,
// stops following it.
func (r *Router) trackPassing(back io.ReadWriteCloser, client net.Conn, ws bool) (io.Reader, func()) {
	l := &liveUpgrade{ws: ws, gone: make(chan struct{})}
	t := newUpgradeTunnel(back, ws)
	l.tunnel.Store(t)
	l.client.Store(&client)
	r.passing.add(l)
	return t, func() {
		t.Close()
		client.Close()
		r.passing.remove(l)
	}
}
