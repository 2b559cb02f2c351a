package process

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// frame builds a server→client WebSocket frame (unmasked) with payload p.
func frame(op byte, p []byte) []byte {
	b := []byte{0x80 | op}
	switch {
	case len(p) < 126:
		b = append(b, byte(len(p)))
	case len(p) < 1<<16:
		b = append(b, 126, 0, 0)
		binary.BigEndian.PutUint16(b[2:], uint16(len(p)))
	default:
		b = append(b, 127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(b[2:], uint64(len(p)))
	}
	return append(b, p...)
}

func TestWSFramesBoundaries(t *testing.T) {
	a, b, c := frame(1, []byte("hi")), frame(2, make([]byte, 300)), frame(2, make([]byte, 70000))
	masked := []byte{0x81, 0x82, 1, 2, 3, 4, 'x', 'y'}
	stream := append(append(append(append([]byte{}, a...), b...), c...), masked...)
	// Fed one byte at a time, the boundaries are exactly the frames' ends.
	var f wsFrames
	var got []int
	for i := range stream {
		if _, at := f.advance(stream[i:i+1], false); at {
			got = append(got, i+1)
		}
	}
	want := []int{len(a), len(a) + len(b), len(a) + len(b) + len(c), len(stream)}
	if len(got) != len(want) {
		t.Fatalf("boundaries %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("boundaries %v, want %v", got, want)
		}
	}
	// With stop, advance stops at the first boundary after a frame has begun.
	var g wsFrames
	g.advance(stream[:3], false) // inside a
	if n, at := g.advance(stream[3:], true); !at || n != len(a)-3 {
		t.Fatalf("stop: %d, %v; want %d, true", n, at, len(a)-3)
	}
	// A reserved opcode is not WebSocket framing.
	var h wsFrames
	if _, at := h.advance([]byte{0x83, 0}, false); at || !h.bad {
		t.Fatalf("reserved opcode taken for a frame")
	}
}

// pipeApp is the app's side of a tunnel: a net.Pipe.
func pipeApp(t *testing.T, ws bool) (*upgradeTunnel, net.Conn) {
	t.Helper()
	app, olio := net.Pipe()
	tun := newUpgradeTunnel(olio, ws)
	t.Cleanup(func() { tun.Close(); app.Close() })
	return tun, app
}

// readAll reads tun until EOF, within a deadline.
func readAll(t *testing.T, tun *upgradeTunnel) []byte {
	t.Helper()
	done := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(tun); done <- b }()
	select {
	case b := <-done:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not end within 10s")
		return nil
	}
}

func TestTunnelEndsAtFrameBoundary(t *testing.T) {
	tun, app := pipeApp(t, true)
	first := frame(1, []byte("hello"))
	big := frame(2, bytes.Repeat([]byte{'x'}, 5000))
	// The app writes a whole frame and half of the next; the end comes between.
	go app.Write(append(append([]byte{}, first...), big[:2000]...))
	head := make([]byte, len(first)+2000)
	if _, err := io.ReadFull(tun, head); err != nil {
		t.Fatal(err)
	}
	tun.end()
	go func() {
		app.Write(big[2000:])
		app.Write(frame(1, []byte("never")))
	}()
	got := append(head, readAll(t, tun)...)
	want := append(append(append([]byte{}, first...), big...), closeServiceRestart...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes ending %q, want %d ending in the close frame", len(got), got[max(0, len(got)-20):], len(want))
	}
	if code := binary.BigEndian.Uint16(closeServiceRestart[2:4]); code != 1012 {
		t.Fatalf("close status %d, want 1012", code)
	}
}

func TestTunnelEndsWhileIdle(t *testing.T) {
	tun, app := pipeApp(t, true)
	go app.Write(frame(1, []byte("a")))
	buf := make([]byte, 64)
	n, err := tun.Read(buf)
	if err != nil || n != 3 {
		t.Fatalf("first frame: %d, %v", n, err)
	}
	tun.end() // the app writes nothing more: the close frame goes out at once
	if got := readAll(t, tun); !bytes.Equal(got, closeServiceRestart) {
		t.Fatalf("got %q, want the close frame", got)
	}
}

func TestTunnelMidFrameStallJustCloses(t *testing.T) {
	tun, app := pipeApp(t, true)
	big := frame(2, make([]byte, 1000))
	go app.Write(big[:100]) // the app stalls inside a frame
	buf := make([]byte, 64<<10)
	if n, err := tun.Read(buf); err != nil || n != 100 {
		t.Fatalf("read %d, %v", n, err)
	}
	start := time.Now()
	tun.end()
	if got := readAll(t, tun); len(got) != 0 {
		t.Fatalf("wrote %d bytes inside a frame", len(got))
	}
	if d := time.Since(start); d > 5*endLinger {
		t.Fatalf("took %s to give up on the frame", d)
	}
}

func TestTunnelOtherProtocolCloses(t *testing.T) {
	tun, app := pipeApp(t, false)
	go app.Write([]byte("raw bytes"))
	buf := make([]byte, 64)
	if n, _ := tun.Read(buf); n != 9 {
		t.Fatalf("read %d", n)
	}
	tun.end()
	if got := readAll(t, tun); len(got) != 0 {
		t.Fatalf("got %q after the end of a non-WebSocket upgrade", got)
	}
}
