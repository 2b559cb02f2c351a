package process

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// The peer leg's wire format: olio's own frames over mux streams, between routers (the
// accepting router forwards, the owner serves). The specification — frames, their order,
// errors and versions — is docs/peer-protocol.md; change it with this file.
const (
	frameHello    byte = 'H' // version 1's hello, a stream's first frame: the bare secret
	frameVersion  byte = 'V' // version 2's hello: a version and the secret; the owner's reply
	frameInterim  byte = 'I' // an interim (1xx) answer before the final one; version 2
	frameRequest  byte = 'Q'
	frameResponse byte = 'S'
	frameData     byte = 'D'
	frameEnd      byte = 'E'
	frameEndClose byte = 'C' // an end after which the owner closes the stream
	frameUpgrade  byte = 'U'

	frameHeaderSize = 5
	// maxDataFrame is the most body a data frame carries.
	maxDataFrame = 32 << 10
	// maxResponseHead bounds an owner's response head (net/http's client allows 10 MB).
	maxResponseHead = 10 << 20
)

// The peer protocol's versions. A router speaks its own version and the one before it, so
// that two builds side by side (an embedded rolling restart) keep forwarding to each other.
const (
	// peerVersion is this build's version: 2, the versioned hello and interim answers.
	peerVersion = 2
	// peerVersionBare is version 1, whose hello is the bare secret (frameHello).
	peerVersionBare = 1
	// peerVersionInterim is the first version with interim answers (frameInterim).
	peerVersionInterim = 2
)

// speaksVersion reports whether a router whose own version is mine speaks version v.
func speaksVersion(mine, v int) bool { return v == mine || v == mine-1 && v >= peerVersionBare }

// Request head flags.
const (
	peerTimed = 1 << iota // the accepting router logs the request: send the app's time back
)

// errFrame is a frame the peer leg's format does not allow where it came.
var errFrame = errors.New("router: malformed frame on the peer leg")

// errHeadTooLarge is a head frame over its limit.
var errHeadTooLarge = errors.New("router: head frame too large on the peer leg")

// appendFrameHeader appends the header of a frame of type typ and n bytes.
func appendFrameHeader(b []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, typ), uint32(n))
}

// beginFrame appends a frame header whose length endFrame fills in.
func beginFrame(b []byte, typ byte) []byte { return appendFrameHeader(b, typ, 0) }

// endFrame sets the length of the frame begun at start.
func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+1:], uint32(len(b)-start-frameHeaderSize))
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendHello appends a stream's hello frame.
func appendHello(b []byte, secret string) []byte {
	return append(appendFrameHeader(b, frameHello, len(secret)), secret...)
}

// appendVersionHello appends a versioned hello: the version, and the secret (empty in the
// owner's reply).
func appendVersionHello(b []byte, version int, secret string) []byte {
	start := len(b)
	b = binary.AppendUvarint(beginFrame(b, frameVersion), uint64(version))
	return endFrame(appendString(b, secret), start)
}

// decodeVersionHello decodes a versioned hello's payload.
func decodeVersionHello(s string) (version int, secret string, err error) {
	d := wireReader{s: s}
	v := d.uvarint()
	secret = d.str()
	if err := d.done(); err != nil {
		return 0, "", err
	}
	if v > maxVersion {
		return 0, "", fmt.Errorf("%w: version %d", errFrame, v)
	}
	return int(v), secret, nil
}

// maxVersion bounds the version a hello may carry (an int on every platform).
const maxVersion = 1 << 30

// appendInterim appends an interim answer: its status and its header.
func appendInterim(b []byte, code int, h http.Header) []byte {
	start := len(b)
	b = binary.AppendUvarint(beginFrame(b, frameInterim), uint64(code))
	return endFrame(appendHeader(b, h, nil), start)
}

// interimStatus reports whether code is an interim answer's status: 1xx, but 101, which
// ends the exchange (frameUpgrade).
func interimStatus(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

// decodeInterim decodes an interim answer's payload.
func decodeInterim(s string) (code int, h http.Header, err error) {
	d := wireReader{s: s}
	c := d.uvarint()
	h = d.header(nil)
	if err := d.done(); err != nil {
		return 0, nil, err
	}
	if c > 999 || !interimStatus(int(c)) {
		return 0, nil, fmt.Errorf("%w: interim status %d", errFrame, c)
	}
	return int(c), h, nil
}

// finalStatus reports whether code may be a final answer's status: three digits, not an
// interim one (101 is, for an owner whose handler said so without taking the stream over).
func finalStatus(code uint64) bool {
	return code == http.StatusSwitchingProtocols || code >= 200 && code <= 999
}

// decodeAnswerHead decodes an answer head's payload, its header into dst (nil: a new one):
// the status (range-checked: it goes to a ResponseWriter), header, announced trailers and
// content length (-1: unknown).
func decodeAnswerHead(s string, dst http.Header) (code int, h, trailer http.Header, length int64, err error) {
	d := wireReader{s: s}
	c := d.uvarint()
	h = d.header(dst)
	if h == nil {
		h = http.Header{}
	}
	trailer = d.names()
	length = d.varint()
	if err := d.done(); err != nil {
		return 0, nil, nil, 0, err
	}
	if !finalStatus(c) {
		return 0, nil, nil, 0, fmt.Errorf("%w: status %d", errFrame, c)
	}
	if length < -1 {
		return 0, nil, nil, 0, fmt.Errorf("%w: content length %d", errFrame, length)
	}
	return int(c), h, trailer, length, nil
}

// appendHeader appends h as a header block, without the fields skip drops (nil: none).
func appendHeader(b []byte, h http.Header, skip *hopFilter) []byte {
	return appendFields(b, h, skip, 0)
}

// appendFields begins a header block of h's fields, less those skip drops, and extra more
// that the caller appends after them.
func appendFields(b []byte, h http.Header, skip *hopFilter, extra int) []byte {
	n := extra
	for k, vs := range h {
		if !skip.drop(k) {
			n += len(vs)
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for k, vs := range h {
		if skip.drop(k) {
			continue
		}
		for _, v := range vs {
			b = appendString(appendString(b, k), v)
		}
	}
	return b
}

// appendNames appends a list of names (trailers announced in a head).
func appendNames(b []byte, names []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = appendString(b, k)
	}
	return b
}

// appendEnd appends an end frame carrying trailer (nil: none).
func appendEnd(b []byte, trailer http.Header) []byte { return appendEndType(b, frameEnd, trailer) }

// appendEndType appends an end frame of type typ (frameEnd or frameEndClose).
func appendEndType(b []byte, typ byte, trailer http.Header) []byte {
	start := len(b)
	b = beginFrame(b, typ)
	return endFrame(appendHeader(b, trailer, nil), start)
}

// readFrameHeader reads the next frame's type and length.
func readFrameHeader(br *bufio.Reader) (typ byte, n int, err error) {
	h, err := br.Peek(frameHeaderSize)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	typ, n = h[0], int(binary.BigEndian.Uint32(h[1:]))
	br.Discard(frameHeaderSize)
	return typ, n, nil
}

// readPayload reads a frame's n bytes, at most limit, as one string: the fields decoded from
// it are its substrings, one allocation for a whole head.
func readPayload(br *bufio.Reader, n, limit int) (string, error) {
	if n > limit {
		return "", errHeadTooLarge
	}
	if n <= br.Size() {
		b, err := br.Peek(n)
		if err != nil {
			return "", unexpected(err)
		}
		s := string(b)
		br.Discard(n)
		return s, nil
	}
	var sb strings.Builder
	sb.Grow(n)
	if _, err := io.CopyN(&sb, br, int64(n)); err != nil {
		return "", unexpected(err)
	}
	return sb.String(), nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// wireReader decodes the fields of a frame's payload; the first error sticks.
type wireReader struct {
	s   string
	err error
}

func (d *wireReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
			return v
		}
	}
	d.err = errFrame
	return 0
}

func (d *wireReader) varint() int64 {
	u := d.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (d *wireReader) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)) {
		d.err = errFrame
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

// header decodes a header block into h (a new one when nil), which it returns.
func (d *wireReader) header(h http.Header) http.Header {
	n := d.uvarint()
	if n > uint64(len(d.s)) { // every field takes two bytes at least
		d.err = errFrame
	}
	if d.err != nil {
		return h
	}
	if h == nil {
		h = make(http.Header, n)
	}
	for range n {
		k, v := d.str(), d.str()
		if d.err != nil {
			break
		}
		h[k] = append(h[k], v)
	}
	return h
}

// names decodes a list of names into the keys of a new header (nil when empty).
func (d *wireReader) names() http.Header {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.err = errFrame
	}
	if d.err != nil || n == 0 {
		return nil
	}
	h := make(http.Header, n)
	for range n {
		h[d.str()] = nil
	}
	return h
}

func (d *wireReader) done() error {
	if d.err == nil && d.s != "" {
		d.err = fmt.Errorf("%w: %d bytes left over", errFrame, len(d.s))
	}
	return d.err
}

// frameBody reads one message's data frames up to its end frame, whose trailers it stores
// in trailer (the keys the head announced, or a new header).
type frameBody struct {
	br      *bufio.Reader
	left    int   // bytes left of the current data frame
	err     error // sticky: io.EOF after the end frame
	closing bool  // the end frame was frameEndClose
	trailer *http.Header
	// ended, if set, is called once when the end frame has been read.
	ended func()
}

func (b *frameBody) Read(p []byte) (int, error) {
	for b.left == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.next()
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= n
	if err != nil {
		b.err = unexpected(err)
		return n, b.err
	}
	if b.left == 0 && b.br.Buffered() >= frameHeaderSize {
		// The end is here already: say so with the last bytes.
		if h, _ := b.br.Peek(1); h[0] == frameEnd || h[0] == frameEndClose {
			b.next()
			if b.err == io.EOF {
				return n, io.EOF
			}
		}
	}
	return n, nil
}

// next reads the next frame's header, and the end frame whole.
func (b *frameBody) next() {
	typ, n, err := readFrameHeader(b.br)
	if err != nil {
		b.err = unexpected(err)
		return
	}
	switch typ {
	case frameData:
		b.left = n
	case frameEnd, frameEndClose:
		b.closing = typ == frameEndClose
		s, err := readPayload(b.br, n, maxResponseHead)
		if err != nil {
			b.err = err
			return
		}
		d := wireReader{s: s}
		var t http.Header
		if b.trailer != nil {
			t = d.header(*b.trailer)
		} else {
			t = d.header(nil)
		}
		if err := d.done(); err != nil {
			b.err = err
			return
		}
		if b.trailer != nil && len(t) > 0 {
			*b.trailer = t
		}
		b.err = io.EOF
		if b.ended != nil {
			b.ended()
		}
	default:
		b.err = errFrame
	}
}

// Close does nothing: whoever owns the stream decides what an unread rest means.
func (b *frameBody) Close() error { return nil }

// complete reports whether the end frame has been read.
func (b *frameBody) complete() bool { return b.err == io.EOF }

// writeData writes p as data frames to bw.
func writeData(bw *bufio.Writer, p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), maxDataFrame)
		var h [frameHeaderSize]byte
		bw.Write(appendFrameHeader(h[:0], frameData, n))
		m, err := bw.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// hopFilter drops the fields that do not cross a proxy (RFC 9110 §7.6.1): the hop-by-hop
// ones, those a Connection field names, and, on a request, the client's X-Forwarded-*,
// Forwarded and Expect (the accepting router sets the first, answers the last) and olio's
// own; as ReverseProxy drops them.
type hopFilter struct {
	conn    []string // the names the Connection field lists, canonical
	request bool
}

// The filters of headers without a Connection field.
var (
	requestHops  = &hopFilter{request: true}
	responseHops = &hopFilter{}
)

// hopSkip is the filter for a header whose Connection field is conn.
func hopSkip(conn []string, request bool) *hopFilter {
	if len(conn) == 0 {
		if request {
			return requestHops
		}
		return responseHops
	}
	f := &hopFilter{request: request}
	for _, v := range conn {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				f.conn = append(f.conn, http.CanonicalHeaderKey(k))
			}
		}
	}
	return f
}

func (f *hopFilter) drop(k string) bool {
	if f == nil {
		return false
	}
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Expect",
		headerTiming, HeaderIndex, HeaderSecret:
		if f.request {
			return true
		}
	}
	for _, c := range f.conn {
		if c == k {
			return true
		}
	}
	return false
}

// outboundURI is the request URI every leg (peer, app) sends for u: ReverseProxy's, whose
// query drops what does not parse (a semicolon, a bad escape), so that the app gets the same
// request whichever way it came.
func outboundURI(u *url.URL) string {
	if !cleanQuery(u.RawQuery) {
		c := *u
		c.RawQuery = reencodeQuery(u.RawQuery)
		return c.RequestURI()
	}
	return u.RequestURI()
}

// cleanQuery reports whether a query passes as it is (ReverseProxy re-encodes one with a
// semicolon, a bad escape or too many parameters, dropping what does not parse).
func cleanQuery(q string) bool {
	if strings.Count(q, "&") >= maxQueryParams {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

// maxQueryParams is net/url's default bound on the parameters of a query.
const maxQueryParams = 10000

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// reencodeQuery keeps what parses of q.
func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}
