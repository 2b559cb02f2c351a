package peerwire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// Frame types.
const (
	FrameHello    byte = 'H' // version 1's hello, a stream's first frame: the bare secret
	FrameVersion  byte = 'V' // version 2's hello: a version and the secret; the owner's reply
	FrameInterim  byte = 'I' // an interim (1xx) answer before the final one; version 2
	FrameRequest  byte = 'Q' // a request head
	FrameResponse byte = 'S' // an answer head
	FrameData     byte = 'D' // a part of a body
	FrameEnd      byte = 'E' // a body's end, with its trailers
	FrameEndClose byte = 'C' // an end after which the owner closes the stream
	FrameUpgrade  byte = 'U' // the request upgrades: HTTP/1.1 on the raw stream follows

	// HeaderSize is the size of a frame's header: its type and its length.
	HeaderSize = 5
	// MaxDataFrame is the most body a data frame carries.
	MaxDataFrame = 32 << 10
	// MaxResponseHead bounds an owner's response head (net/http's client allows 10 MB).
	MaxResponseHead = 10 << 20
)

// The peer protocol's versions. A router speaks its own version and the one before it, so
// that two builds side by side (an embedded rolling restart) keep forwarding to each other.
const (
	// Version is this build's version: 2, the versioned hello and interim answers.
	Version = 2
	// VersionBare is version 1, whose hello is the bare secret (FrameHello).
	VersionBare = 1
	// VersionInterim is the first version with interim answers (FrameInterim).
	VersionInterim = 2
)

// Speaks reports whether a router whose own version is mine speaks version v.
func Speaks(mine, v int) bool { return v == mine || v == mine-1 && v >= VersionBare }

// Request head flags.
const (
	Timed = 1 << iota // the accepting router logs the request: send the app's time back
)

// Errors.
var (
	// ErrFrame is a frame the peer leg's format does not allow where it came.
	ErrFrame = errors.New("router: malformed frame on the peer leg")
	// ErrHeadTooLarge is a head frame over its limit.
	ErrHeadTooLarge = errors.New("router: head frame too large on the peer leg")
)

// AppendFrameHeader appends the header of a frame of type typ and n bytes.
func AppendFrameHeader(b []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, typ), uint32(n))
}

// BeginFrame appends a frame header whose length EndFrame fills in.
func BeginFrame(b []byte, typ byte) []byte { return AppendFrameHeader(b, typ, 0) }

// EndFrame sets the length of the frame begun at start.
func EndFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+1:], uint32(len(b)-start-HeaderSize))
	return b
}

// AppendString appends s, length first.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendHello appends a stream's version 1 hello frame.
func AppendHello(b []byte, secret string) []byte {
	return append(AppendFrameHeader(b, FrameHello, len(secret)), secret...)
}

// AppendVersionHello appends a versioned hello: the version, and the secret (empty in the
// owner's reply).
func AppendVersionHello(b []byte, version int, secret string) []byte {
	start := len(b)
	b = binary.AppendUvarint(BeginFrame(b, FrameVersion), uint64(version))
	return EndFrame(AppendString(b, secret), start)
}

// DecodeVersionHello decodes a versioned hello's payload.
func DecodeVersionHello(s string) (version int, secret string, err error) {
	d := reader{s: s}
	v := d.uvarint()
	secret = d.str()
	if err := d.done(); err != nil {
		return 0, "", err
	}
	if v > maxVersion {
		return 0, "", fmt.Errorf("%w: version %d", ErrFrame, v)
	}
	return int(v), secret, nil
}

// maxVersion bounds the version a hello may carry (an int on every platform).
const maxVersion = 1 << 30

// AppendInterim appends an interim answer: its status and its header.
func AppendInterim(b []byte, code int, h http.Header) []byte {
	start := len(b)
	b = binary.AppendUvarint(BeginFrame(b, FrameInterim), uint64(code))
	return EndFrame(AppendHeader(b, h, nil), start)
}

// interimStatus reports whether code is an interim answer's status: 1xx, but 101, which
// ends the exchange (FrameUpgrade).
func interimStatus(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

// DecodeInterim decodes an interim answer's payload.
func DecodeInterim(s string) (code int, h http.Header, err error) {
	d := reader{s: s}
	c := d.uvarint()
	h = d.header(nil)
	if err := d.done(); err != nil {
		return 0, nil, err
	}
	if c > 999 || !interimStatus(int(c)) {
		return 0, nil, fmt.Errorf("%w: interim status %d", ErrFrame, c)
	}
	return int(c), h, nil
}

// finalStatus reports whether code may be a final answer's status: three digits, not an
// interim one (101 is, for an owner whose handler said so without taking the stream over).
func finalStatus(code uint64) bool {
	return code == http.StatusSwitchingProtocols || code >= 200 && code <= 999
}

// RequestHead is a request head's payload, decoded.
type RequestHead struct {
	Flags             uint64 // Timed
	Method, URI, Host string
	Length            int64       // the body's length: 0 none, -1 unknown
	Header            http.Header // a new one, never nil
	Trailer           http.Header // the trailers announced (keys only), nil when none
}

// DecodeRequestHead decodes a request head's payload.
func DecodeRequestHead(s string) (RequestHead, error) {
	d := reader{s: s}
	var r RequestHead
	r.Flags = d.uvarint()
	r.Method, r.URI, r.Host = d.str(), d.str(), d.str()
	r.Length = d.varint()
	r.Header = d.header(nil)
	r.Trailer = d.names()
	if err := d.done(); err != nil {
		return RequestHead{}, err
	}
	return r, nil
}

// DecodeAnswerHead decodes an answer head's payload, its header into dst (nil: a new one):
// the status (range-checked: it goes to a ResponseWriter), header, announced trailers and
// content length (-1: unknown).
func DecodeAnswerHead(s string, dst http.Header) (code int, h, trailer http.Header, length int64, err error) {
	d := reader{s: s}
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
		return 0, nil, nil, 0, fmt.Errorf("%w: status %d", ErrFrame, c)
	}
	if length < -1 {
		return 0, nil, nil, 0, fmt.Errorf("%w: content length %d", ErrFrame, length)
	}
	return int(c), h, trailer, length, nil
}

// AppendHeader appends h as a header block, without the fields skip drops (nil: none).
func AppendHeader(b []byte, h http.Header, skip *httprules.HopFilter) []byte {
	return AppendFields(b, h, skip, 0)
}

// AppendFields begins a header block of h's fields, less those skip drops, and extra more
// that the caller appends after them (each name then value, with AppendString).
func AppendFields(b []byte, h http.Header, skip *httprules.HopFilter, extra int) []byte {
	n := extra
	for k, vs := range h {
		if !skip.Drop(k) {
			n += len(vs)
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for k, vs := range h {
		if skip.Drop(k) {
			continue
		}
		for _, v := range vs {
			b = AppendString(AppendString(b, k), v)
		}
	}
	return b
}

// AppendNames appends a list of names (trailers announced in a head).
func AppendNames(b []byte, names []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = AppendString(b, k)
	}
	return b
}

// AppendEnd appends an end frame carrying trailer (nil: none).
func AppendEnd(b []byte, trailer http.Header) []byte { return AppendEndType(b, FrameEnd, trailer) }

// AppendEndType appends an end frame of type typ (FrameEnd or FrameEndClose).
func AppendEndType(b []byte, typ byte, trailer http.Header) []byte {
	start := len(b)
	b = BeginFrame(b, typ)
	return EndFrame(AppendHeader(b, trailer, nil), start)
}

// ReadFrameHeader reads the next frame's type and length.
func ReadFrameHeader(br *bufio.Reader) (typ byte, n int, err error) {
	h, err := br.Peek(HeaderSize)
	if err != nil {
		if err == io.EOF && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	typ, n = h[0], int(binary.BigEndian.Uint32(h[1:]))
	br.Discard(HeaderSize)
	return typ, n, nil
}

// ReadPayload reads a frame's n bytes, at most limit, as one string: the fields decoded from
// it are its substrings, one allocation for a whole head.
func ReadPayload(br *bufio.Reader, n, limit int) (string, error) {
	if n > limit {
		return "", ErrHeadTooLarge
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

// reader decodes the fields of a frame's payload; the first error sticks.
type reader struct {
	s   string
	err error
}

func (d *reader) uvarint() uint64 {
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
	d.err = ErrFrame
	return 0
}

func (d *reader) varint() int64 {
	u := d.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (d *reader) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)) {
		d.err = ErrFrame
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

// header decodes a header block into h (a new one when nil), which it returns.
func (d *reader) header(h http.Header) http.Header {
	n := d.uvarint()
	if n > uint64(len(d.s)) { // every field takes two bytes at least
		d.err = ErrFrame
	}
	if d.err != nil {
		return h
	}
	if h == nil {
		h = make(http.Header, n)
	}
	// The fields' first values share one array, as in net/textproto: one allocation for
	// them all, each a slice of it that a later append copies out of.
	vals := make([]string, n)
	for i := range n {
		k, v := d.str(), d.str()
		if d.err != nil {
			break
		}
		if old, ok := h[k]; ok {
			h[k] = append(old, v)
			continue
		}
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
	}
	return h
}

// fields decodes a header block into a new header, nil when it is empty.
func (d *reader) fields() http.Header {
	if d.err == nil && d.s != "" && d.s[0] == 0 {
		d.s = d.s[1:] // a count of 0
		return nil
	}
	return d.header(nil)
}

// names decodes a list of names into the keys of a new header (nil when empty).
func (d *reader) names() http.Header {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.err = ErrFrame
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

func (d *reader) done() error {
	if d.err == nil && d.s != "" {
		d.err = fmt.Errorf("%w: %d bytes left over", ErrFrame, len(d.s))
	}
	return d.err
}

// Body reads one message's data frames from R up to its end frame, whose trailers it stores
// in *Trailer (into the keys the head announced, or a new header).
type Body struct {
	R       *bufio.Reader
	Trailer *http.Header
	// Ended, if set, is called once when the end frame has been read.
	Ended func()

	left     int   // bytes left of the current data frame
	err      error // sticky: io.EOF after the end frame
	closing  bool  // the end frame was FrameEndClose
	complete atomic.Bool
}

func (b *Body) Read(p []byte) (int, error) {
	for b.left == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.Next()
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.R.Read(p)
	b.left -= n
	if err != nil {
		b.err = unexpected(err)
		return n, b.err
	}
	if b.left == 0 && b.R.Buffered() >= HeaderSize {
		// The end is here already: say so with the last bytes.
		if h, _ := b.R.Peek(1); h[0] == FrameEnd || h[0] == FrameEndClose {
			b.Next()
			if b.err == io.EOF {
				return n, io.EOF
			}
		}
	}
	return n, nil
}

// Next reads the next frame's header, and the end frame whole (then Complete reports true).
func (b *Body) Next() {
	typ, n, err := ReadFrameHeader(b.R)
	if err != nil {
		b.err = unexpected(err)
		return
	}
	switch typ {
	case FrameData:
		b.left = n
	case FrameEnd, FrameEndClose:
		b.closing = typ == FrameEndClose
		s, err := ReadPayload(b.R, n, MaxResponseHead)
		if err != nil {
			b.err = err
			return
		}
		d := reader{s: s}
		var t http.Header
		if b.Trailer != nil && *b.Trailer != nil {
			t = d.header(*b.Trailer)
		} else {
			t = d.fields()
		}
		if err := d.done(); err != nil {
			b.err = err
			return
		}
		if b.Trailer != nil && len(t) > 0 {
			*b.Trailer = t
		}
		b.err = io.EOF
		b.complete.Store(true)
		if b.Ended != nil {
			b.Ended()
		}
	default:
		b.err = ErrFrame
	}
}

// Close does nothing: whoever owns the stream decides what an unread rest means.
func (b *Body) Close() error { return nil }

// Complete reports whether the end frame has been read. It may be asked while a Read is
// still under way on another goroutine (a handler that returned before its body was read
// to the end, whose reader is still waiting on the stream): that body is not complete.
func (b *Body) Complete() bool { return b.complete.Load() }

// Closing reports whether the end frame read was FrameEndClose: the owner closes the stream.
func (b *Body) Closing() bool { return b.complete.Load() && b.closing }

// WriteData writes p as data frames to bw.
func WriteData(bw *bufio.Writer, p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), MaxDataFrame)
		var h [HeaderSize]byte
		bw.Write(AppendFrameHeader(h[:0], FrameData, n))
		m, err := bw.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
