package process

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// deadlineRecorder is a ResponseWriter that records the read deadlines set through it.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	set []time.Time
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return nil
}

// A body read that returns after its request was served sets no read deadline: the
// connection may be reading the next request by then.
func TestTimedBodyQuietAfterServed(t *testing.T) {
	w := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
	b := &timedBody{ReadCloser: io.NopCloser(strings.NewReader("abc")), rc: http.NewResponseController(w),
		start: time.Now(), d: time.Second, r: &Router{}}
	b.Read(make([]byte, 1))
	if len(w.set) == 0 {
		t.Fatal("a body read while its request is served set no deadline: the test tests nothing")
	}
	w.set = nil
	b.over.Store(true)
	if _, err := io.ReadAll(b); err != nil {
		t.Fatal(err)
	}
	if len(w.set) != 0 {
		t.Errorf("reads after the request was served set %d read deadlines on its connection", len(w.set))
	}
}
