package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pipelined sends a keyed request and a keyless one in one write on a fresh connection and
// returns the workers that answered them.
func pipelined(t *testing.T, addr, key string) (first, second int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /1 HTTP/1.1\r\nHost: t\r\nX-Olio-Key: %s\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n", key)
	br := bufio.NewReader(c)
	var idx [2]int
	for i := range idx {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("key %s, answer %d: %v", key, i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("key %s, answer %d: %d %s", key, i, resp.StatusCode, body)
		}
		if _, err := fmt.Sscanf(strings.TrimPrefix(string(body), `{"index":`), "%d", &idx[i]); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
	}
	return idx[0], idx[1]
}

// With handoff, the owner of a connection's first request serves the connection from then
// on: a keyless request pipelined after it is answered by the same worker, wherever the
// connection was accepted.
func TestHandoffKeepsConnectionOnOwner(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "3")
	for i := 0; i < 30; i++ {
		key := fmt.Sprintf("conn-%d", i)
		first, second := pipelined(t, c.Addr, key)
		if want := Owner(key, 3); first != want || second != want {
			t.Errorf("key %s: answered by %d then %d; owner %d should serve both", key, first, second, want)
		}
	}
}

// Without handoff the keyless request stays with the router that accepted the connection,
// so across many connections some land elsewhere than the first request's owner. This is
// what makes the test above able to fail.
func TestNoHandoffForwardsInstead(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "3", "--handoff=false")
	elsewhere := 0
	for i := 0; i < 30; i++ {
		key := fmt.Sprintf("conn-%d", i)
		first, second := pipelined(t, c.Addr, key)
		if first != Owner(key, 3) {
			t.Errorf("key %s answered by %d, owner %d", key, first, Owner(key, 3))
		}
		if second != first {
			elsewhere++
		}
	}
	if elsewhere == 0 {
		t.Errorf("all 30 keyless requests landed on their connection's first owner without handoff")
	}
}

// TestHandoffNotForHTTP10: an HTTP/1.0 request is answered as HTTP/1.0 whichever router
// accepts it (handed off, it would be re-serialised and answered as 1.1).
func TestHandoffNotForHTTP10(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	for i := 0; i < 16; i++ {
		key := keyOwnedBy(i%2, 2)
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /old HTTP/1.0\r\nX-Olio-Key: %s\r\n\r\n", key)
		answer, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || !strings.HasPrefix(string(answer), "HTTP/1.0 200") {
			t.Fatalf("HTTP/1.0 request %d (key %s): %v, answer %q; want HTTP/1.0 200", i, key, err, answer)
		}
	}
}
