package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/olio-dev/olio/mux"
)

// Connection handoff: when the first request on a client connection belongs to another
// worker, the accepting router passes the client socket itself (SCM_RIGHTS over a unix
// datagram socket in the run directory) to the owner, together with the bytes it has
// already read: the request, re-serialised, and anything the client pipelined after it. The
// owner serves that connection from then on, so a connection that carries one key — the
// common case, one user per connection — costs no forwarding hop at all. Later requests on
// it for other keys are forwarded as usual.
//
// Only a bodiless HTTP/1.1 request routed by its key is handed off (an HTTP/1.0 one would be
// re-serialised as 1.1 and answered as 1.1, chunked); a request with a body
// or addressed by X-Olio-Index is forwarded. If the owner cannot take the connection (it is
// restarting, draining or not listening for handoffs), the accepting router keeps serving
// it itself, forwarding as usual.

// maxHandoffPrefix bounds the bytes sent along with a socket.
const maxHandoffPrefix = 64 << 10

// connInfo is what a router knows about one public connection.
type connInfo struct {
	conn       net.Conn
	requests   atomic.Int32
	handedIn   bool // received from another router, or taken back from a failed handoff: never passed on again
	received   bool // received from another router (the access log's handed-off route)
	canHandOff bool // a plain socket whose descriptor can be passed
	framing    *framingConn
	// frontTrusted: the peer is in --forwarded-allow-ips, as of the connection's latest
	// request (forwardedOf).
	frontTrusted atomic.Bool
}

type connInfoKey struct{}

// connContext records a public connection's info in its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	info := &connInfo{conn: c}
	if fc, ok := c.(*framingConn); ok {
		info.framing = fc
		c = fc.Conn
	}
	if pc, ok := c.(*prefixConn); ok {
		info.handedIn, info.received = true, pc.received
		c = pc.Conn
	}
	info.canHandOff = isSocket(c)
	return context.WithValue(ctx, connInfoKey{}, info)
}

// isSocket reports whether c is a socket whose descriptor can be passed.
func isSocket(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	_, err := sc.SyscallConn()
	return err == nil
}

// prefixConn is a connection whose first bytes were already read by another router.
type prefixConn struct {
	passConn
	r        io.Reader
	received bool // from another router, not taken back from a failed handoff
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func newPrefixConn(c net.Conn, prefix []byte) *prefixConn {
	return &prefixConn{passConn: passConn{c}, r: io.MultiReader(bytes.NewReader(prefix), c)}
}

// handoff owns this router's handoff socket: it receives connections from peers, and sends
// them to peers.
type handoff struct {
	in   *net.UnixConn   // bound at dir's handoff socket for index; nil while not accepting
	file *mux.SocketFile // the socket file in was bound to: close removes only that one
	out  *net.UnixConn   // unbound, for sending
	done chan struct{}
	// stale counts the goroutines answering connections that waited too long (answerStale);
	// shutdown waits for them.
	stale sync.WaitGroup

	dir      string         // the run directory, where every router's handoff socket is; guarded by mu
	index    int            // this router's worker index
	logger   *slog.Logger   // for a bad message
	handedIn *atomic.Uint64 // counts the connections received

	// maxWait is how long a connection may have waited in the socket's queue (this router
	// stopped, or too busy to take connections) and still be served (nil: no bound); past
	// it, its request is answered 503 here. The router sets it to --forward-timeout.
	maxWait    func() time.Duration
	staleCount atomic.Int64 // connections answered so since the last log line
	staleLog   atomic.Int64 // when that line was written, in Unix ns

	mu    sync.Mutex
	queue *connQueue // where received connections go; nil while not accepting
}

// newHandoff makes the sending socket of worker index, whose run directory is dir. Receiving
// starts with open.
func newHandoff(dir string, index int, logger *slog.Logger, handedIn *atomic.Uint64) (*handoff, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("router: handoff socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "handoff-out")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("router: handoff socket: %w", err)
	}
	return &handoff{dir: dir, index: index, logger: logger, handedIn: handedIn, out: pc.(*net.UnixConn)}, nil
}

// open starts receiving connections into q.
func (h *handoff) open(q *connQueue) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queue = q
	if h.in != nil {
		return nil
	}
	in, file, err := mux.ListenUnixgram(RunDir(h.dir).HandoffSocket(h.index))
	if err != nil {
		return fmt.Errorf("router: handoff socket: %w", err)
	}
	// The kernel stamps each message with the time it was sent: how long its connection
	// waited in the queue.
	if raw, err := in.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMP, 1) })
	}
	h.in, h.file = in, file
	h.done = make(chan struct{})
	go h.receive(in, h.done)
	return nil
}

// close stops receiving; peers then keep their connections. The connections peers sent
// before are still taken into the queue (which the caller closes afterwards): closing the
// socket with them unread would close them, and their clients would get no answer.
func (h *handoff) close() {
	h.mu.Lock()
	in, done, file := h.in, h.done, h.file
	h.in = nil
	h.mu.Unlock()
	if in != nil {
		// From now on, a send fails and the sender keeps its connection; or, when this
		// worker's replacement has bound the path already (an embedded worker's rolling
		// restart), it reaches the replacement.
		file.Remove()
		in.SetReadDeadline(time.Now()) // receive takes what was sent before, then returns
		<-done
		in.Close()
	}
	h.mu.Lock()
	h.queue = nil
	h.mu.Unlock()
}

// shutdown closes both sockets.
func (h *handoff) shutdown() {
	h.close()
	h.out.Close()
	h.stale.Wait() // the stale connections' answers are written (bounded by staleAnswerTimeout)
}

func (h *handoff) receive(in *net.UnixConn, done chan struct{}) {
	defer close(done)
	buf := make([]byte, maxHandoffPrefix+1)
	oob := make([]byte, unix.CmsgSpace(4)+unix.CmsgSpace(int(unsafe.Sizeof(unix.Timeval{}))))
	for {
		n, oobn, _, _, err := in.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) { // close
				h.takePending(in, buf, oob)
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		h.take(buf[:n], oob[:oobn])
	}
}

// takePending takes the connections already sent to in, without waiting for more.
func (h *handoff) takePending(in *net.UnixConn, buf, oob []byte) {
	in.SetReadDeadline(time.Time{})
	raw, err := in.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n, oobn int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			return true
		})
		if err != nil || rerr != nil { // EAGAIN: nothing left
			return
		}
		h.take(buf[:n], oob[:oobn])
	}
}

// take queues the connection of one handoff message, or answers its request at once if it
// waited in the socket's queue longer than maxWait.
func (h *handoff) take(msg, oob []byte) {
	c, sent, err := connFromRights(oob)
	if err != nil {
		h.logger.Warn("handoff: bad message", "err", err)
		return
	}
	prefix := append([]byte(nil), msg...)
	if h.maxWait != nil && !sent.IsZero() {
		if waited := time.Since(sent); waited > h.maxWait() {
			// Its sender has let it go for good (two routers never serve one socket), and
			// its client has waited long enough.
			h.noteStale(waited)
			h.stale.Add(1)
			go func() { defer h.stale.Done(); answerStale(c, prefix, h.index, waited) }()
			return
		}
	}
	h.mu.Lock()
	q := h.queue
	h.mu.Unlock()
	pc := newPrefixConn(c, prefix)
	pc.received = true
	if q == nil || !q.push(pc) {
		c.Close()
		return
	}
	h.handedIn.Add(1)
}

// noteStale logs the connections answered by answerStale, at most a line a second.
func (h *handoff) noteStale(waited time.Duration) {
	n := h.staleCount.Add(1)
	now, last := time.Now().UnixNano(), h.staleLog.Load()
	if now-last < int64(time.Second) || !h.staleLog.CompareAndSwap(last, now) {
		return
	}
	h.staleCount.Add(-n)
	h.logger.Warn("handoff: connections waited too long in this worker's queue (was it stopped?): their requests were answered 503",
		"connections", n, "waited", waited.Round(time.Millisecond))
}

// staleAnswerTimeout bounds the writing of answerStale's answer.
const staleAnswerTimeout = 5 * time.Second

// answerStale answers the first request of a connection that waited too long in the handoff
// queue of worker index, and closes it. The request has not run: 503, with Retry-After.
func answerStale(c net.Conn, prefix []byte, index int, waited time.Duration) {
	defer c.Close()
	text := fmt.Sprintf("olio: worker %d did not take the connection in time (it waited %s)\n", index, waited.Round(time.Millisecond))
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\nRetry-After: 1\r\nConnection: close\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(text))
	if !bytes.HasPrefix(prefix, []byte("HEAD ")) {
		b.WriteString(text)
	}
	c.SetDeadline(time.Now().Add(staleAnswerTimeout))
	if _, err := c.Write(b.Bytes()); err != nil {
		return
	}
	// As net/http does: half-close, and read what the client still sends for a moment, so
	// that it reads the answer rather than a reset.
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		io.Copy(io.Discard, io.LimitReader(c, 256<<10))
	}
}

// connFromRights makes a net.Conn of the one descriptor in a handoff message's control
// messages, and returns the time the kernel stamped the message with (zero: none).
func connFromRights(oob []byte) (net.Conn, time.Time, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("no descriptor (%v)", err)
	}
	var (
		fds  []int
		sent time.Time
	)
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			got, err := unix.ParseUnixRights(m)
			if err != nil {
				continue
			}
			fds = append(fds, got...)
		case unix.SCM_TIMESTAMP:
			if len(m.Data) >= int(unsafe.Sizeof(unix.Timeval{})) {
				tv := (*unix.Timeval)(unsafe.Pointer(&m.Data[0]))
				sent = time.Unix(tv.Unix())
			}
		}
	}
	if len(fds) == 0 {
		return nil, time.Time{}, errors.New("no descriptor")
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	f := os.NewFile(uintptr(fds[0]), "handed-off")
	defer f.Close()
	c, err := net.FileConn(f)
	return c, sent, err
}

// send passes conn, with prefix, to the router of index.
func (h *handoff) send(index int, conn net.Conn, prefix []byte) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	out, err := h.out.SyscallConn()
	if err != nil {
		return err
	}
	to := &unix.SockaddrUnix{Name: RunDir(h.runDir()).HandoffSocket(index)}
	var sendErr error
	err = raw.Control(func(fd uintptr) {
		rights := unix.UnixRights(int(fd))
		if err := out.Control(func(ofd uintptr) {
			// Never waits: a full queue (the owner is not taking connections) fails, and
			// the connection stays here.
			sendErr = unix.Sendmsg(int(ofd), prefix, rights, to, unix.MSG_DONTWAIT)
		}); err != nil {
			sendErr = err
		}
	})
	if err != nil {
		return err
	}
	return sendErr
}

// tryHandOff passes the request's connection to worker target if this is the first request
// on it and it qualifies. It reports whether the request was taken care of.
func (r *Router) tryHandOff(w http.ResponseWriter, req *http.Request, target int) bool {
	info, _ := req.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil || info.handedIn || !info.canHandOff || info.requests.Load() != 1 ||
		!r.conf().Handoff || r.accept == nil ||
		req.ProtoMajor != 1 || req.ProtoMinor == 0 || req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	// A sent connection is the owner's for good. One not heard from lately (stopped, or
	// stuck) would take it only when it resumes: forward instead, which waits for it up to
	// --forward-timeout.
	if !r.pool.Heard(req.Context(), target) {
		return false
	}
	// The queue to put the connection back into if the owner cannot take it; none once
	// this router has stopped accepting (then forward as usual).
	q := r.accept.holdQueue()
	if q == nil {
		return false
	}
	defer q.users.Done()
	var head bytes.Buffer
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // or Write adds Go's own
	}
	if err := req.Write(&head); err != nil || head.Len() > maxHandoffPrefix/2 {
		return false
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return false
	}
	prefix := head.Bytes()
	if n := brw.Reader.Buffered(); n > 0 {
		pipelined, _ := brw.Reader.Peek(n)
		prefix = append(prefix, pipelined...)
	}
	if len(prefix) <= maxHandoffPrefix {
		if err := r.accept.handoff.send(target, conn, prefix); err == nil {
			conn.Close() // our copy; the owner holds the connection now
			r.counters.handedOut.Add(1)
			return true
		}
	}
	// The owner could not take it: keep serving the connection here, forwarding as usual.
	r.serveHijacked(q, conn, prefix)
	return true
}

// serveHijacked puts a hijacked connection back into this router's public server, through
// its queue q.
func (r *Router) serveHijacked(q *connQueue, conn net.Conn, prefix []byte) {
	pc := newPrefixConn(conn, prefix)
	if q == nil || !q.push(pc) {
		conn.Close()
	}
}

// markRequest counts a request on its connection and notes whether its peer is a trusted
// front (allow).
func markRequest(req *http.Request, allow ForwardedAllowIPs) {
	if info, _ := req.Context().Value(connInfoKey{}).(*connInfo); info != nil {
		info.requests.Add(1)
		info.frontTrusted.Store(allow.Trusts(req.RemoteAddr))
	}
}
