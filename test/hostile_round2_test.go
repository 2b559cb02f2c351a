package test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// The second round of hostile clients and apps (issue 11): slow bodies, apps that are
// never ready, framing that must close the connection, error answers that say too much.

// TestHostileBadGatewayPlain: a 502 tells the client a plain line; the detail (addresses,
// syscalls) goes to the log only.
func TestHostileBadGatewayPlain(t *testing.T) {
	c, _ := hostileStart(t, 2, "--handoff=false")
	internal := regexp.MustCompile(`\d+\.\d+\.\d+\.\d+|tcp|reset|EOF|read|write`)
	for i := 0; i < 2; i++ {
		for try := 0; try < 3; try++ { // accepted by either router: local and forwarded
			req, _ := http.NewRequest("POST", c.URL()+"/reset", strings.NewReader("body"))
			req.Header.Set("X-Olio-Key", keyFor(i, 2))
			resp, err := quick.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("worker %d: status %d %q, want 502", i, resp.StatusCode, body)
			}
			if m := internal.Find(body); m != nil {
				t.Errorf("worker %d: the 502 body %q shows %q", i, body, m)
			}
		}
	}
	if c.CountLog("app failed") == 0 {
		t.Errorf("the detail of the failures is not in the log")
	}
}
