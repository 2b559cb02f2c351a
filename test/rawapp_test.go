package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/olio-dev/olio/router"
)

// The raw app of the differential test (differential_test.go): a TCP server that reads
// each request itself, records exactly what it received, and answers with the raw bytes
// its case in diffCases scripts (framing, stray bytes, closes and all), which no http
// handler could write. The same code runs as olio's app (the test binary re-executed with
// rawAppArg, on $PORT) and inside the test process, behind the reference ReverseProxy.

const (
	// rawAppArg, as the test binary's first argument, makes it run the raw app on
	// 127.0.0.1:$PORT, recording into the file named by the next argument plus
	// "."+$OLIO_INDEX.
	rawAppArg = "olio-raw-app"
	// rawEmbeddedArg makes it an embedded olio worker (router.Serve) whose handler is a
	// ReverseProxy to the raw app at the address given as the next argument.
	rawEmbeddedArg = "olio-raw-embedded"
)

func init() {
	if len(os.Args) < 3 {
		return
	}
	switch os.Args[1] {
	case rawAppArg:
		os.Exit(rawAppMain(os.Args[2]))
	case rawEmbeddedArg:
		if err := router.Serve(referenceProxy(os.Args[2])); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// rawAppMain serves the raw app on $PORT until TERM.
func rawAppMain(record string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	f, err := os.OpenFile(record+"."+os.Getenv("OLIO_INDEX"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	app := &rawApp{rec: f, index: os.Getenv("OLIO_INDEX")}
	app.serve(ln) // until olio's TERM kills the process
	return 0
}

// referenceProxy is the reference: httputil.ReverseProxy alone in front of the app at
// addr, with a transport of Go's defaults, the Host kept and X-Forwarded-* set (as a
// proxy that keeps virtual hosting working is configured).
func referenceProxy(addr string) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: addr}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		ErrorLog:  log.New(io.Discard, "", 0),
	}
}

// rawRecord is one line of the raw app's record file: a request as the app read it, the
// note that a case's late bytes were written (Late), or that the proxy ended the
// connection after the request (Gone).
type rawRecord struct {
	ID      string   `json:"id"`
	App     string   `json:"app,omitempty"` // the app's OLIO_INDEX ("" in the test process)
	Late    bool     `json:"late,omitempty"`
	Gone    bool     `json:"gone,omitempty"`    // the proxy ended the connection of this request
	Line    string   `json:"line,omitempty"`    // the request line
	Fields  []string `json:"fields,omitempty"`  // header fields, "Name: value", names canonical
	Body    string   `json:"body,omitempty"`    // the body, unchunked
	Trailer []string `json:"trailer,omitempty"` // a chunked body's trailer fields
	Err     string   `json:"err,omitempty"`     // reading the request failed
}

// rawApp serves diffCases' scripted answers and records what it reads.
type rawApp struct {
	mu    sync.Mutex
	rec   io.Writer
	index string // OLIO_INDEX, noted in every record
	wg    sync.WaitGroup
}

func (a *rawApp) note(r rawRecord) {
	r.App = a.index
	b, _ := json.Marshal(r)
	a.mu.Lock()
	a.rec.Write(append(b, '\n'))
	a.mu.Unlock()
}

// serve accepts until ln is closed, then waits for its connections to end.
func (a *rawApp) serve(ln net.Listener) {
	var conns sync.Map
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		conns.Store(c, true)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer conns.Delete(c)
			a.serveConn(c)
		}()
	}
	conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
	a.wg.Wait()
}

// serveConn answers requests on c as their cases script, until a case closes it or the
// proxy does.
func (a *rawApp) serveConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var late sync.WaitGroup // a case's late bytes, written while the connection is idle
	defer late.Wait()
	last := "" // the id of the last request read on c
	for {
		rec, script, body, err := readRawRequest(br)
		if err != nil {
			if rec.Line != "" {
				a.note(rec)
			}
			if last != "" {
				a.note(rawRecord{ID: last, Gone: true})
			}
			return
		}
		last = rec.ID
		if script.ReadBody {
			rec.Body, rec.Trailer, rec.Err = readRawBody(br, body)
			a.note(rec)
		}
		if _, err := io.WriteString(c, script.Answer); err != nil {
			return
		}
		if !script.ReadBody {
			rec.Body, rec.Trailer, rec.Err = readRawBody(br, body)
			a.note(rec)
		}
		if script.Later != "" {
			late.Add(1)
			time.AfterFunc(lateDelay, func() {
				defer late.Done()
				_, err := io.WriteString(c, script.Later)
				r := rawRecord{ID: rec.ID, Late: true}
				if err != nil {
					r.Err = err.Error()
				}
				a.note(r)
			})
		}
		if script.Close {
			late.Wait()
			return
		}
	}
}

// lateDelay is when a case's late bytes follow its answer: a pooled connection is idle
// by then.
const lateDelay = 50 * time.Millisecond

// rawBody says how a request's body is framed: a length, or chunked.
type rawBody struct {
	length  int64
	chunked bool
}

// readRawRequest reads a request's head from br and finds its case's script: by path
// under /diff/, or the follow-up answer for /diff-after.
func readRawRequest(br *bufio.Reader) (rawRecord, appScript, rawBody, error) {
	var rec rawRecord
	var head bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if head.Len() > 0 {
				rec.Err = "head cut short: " + err.Error()
			}
			return rec, appScript{}, rawBody{}, err
		}
		head.Write(line)
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	rec.Line, _, _ = strings.Cut(head.String(), "\n")
	rec.Line = strings.TrimRight(rec.Line, "\r")
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head.Bytes())))
	if err != nil {
		rec.Err = "unreadable head: " + err.Error()
		return rec, appScript{}, rawBody{}, err
	}
	rec.ID = req.Header.Get("X-Diff-Id")
	// The fields as they came (ReadRequest takes Host and Transfer-Encoding out of the
	// header), the names canonical.
	lines := strings.Split(strings.TrimRight(head.String(), "\r\n"), "\n")
	for _, line := range lines[1:] {
		name, value, _ := strings.Cut(strings.TrimRight(line, "\r"), ":")
		rec.Fields = append(rec.Fields, textproto.CanonicalMIMEHeaderKey(name)+": "+strings.TrimSpace(value))
	}
	slices.Sort(rec.Fields)
	body := rawBody{length: max(req.ContentLength, 0), chunked: slices.Contains(req.TransferEncoding, "chunked")}
	if req.URL.Path == "/diff-after" {
		// A follow-up: its own answer, and with ?close the connection's last.
		b, closing, conn := "after "+rec.ID, req.URL.Query().Has("close"), ""
		if closing {
			conn = "Connection: close\r\n"
		}
		return rec, appScript{ReadBody: true, Close: closing, Answer: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n%sContent-Length: %d\r\n\r\n%s", conn, len(b), b)}, body, nil
	}
	for _, c := range diffCases {
		if req.URL.Path == "/diff/"+c.Name {
			return rec, c.App, body, nil
		}
	}
	return rec, appScript{ReadBody: true, Answer: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"}, body, nil
}

// readRawBody reads a request's body (and a chunked body's trailer) from br.
func readRawBody(br *bufio.Reader, body rawBody) (string, []string, string) {
	if !body.chunked {
		b, err := io.ReadAll(io.LimitReader(br, body.length))
		if err == nil && int64(len(b)) < body.length {
			err = io.ErrUnexpectedEOF
		}
		return string(b), nil, errText(err)
	}
	b, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		return string(b), nil, errText(err)
	}
	tp := textproto.NewReader(br)
	trailer, err := tp.ReadMIMEHeader()
	var lines []string
	for name, vs := range trailer {
		for _, v := range vs {
			lines = append(lines, name+": "+v)
		}
	}
	slices.Sort(lines)
	return string(b), lines, errText(err)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// rawRecords reads the records of the raw apps whose files start with prefix, by id.
// A line still being written is skipped.
func rawRecords(prefix string) map[string][]rawRecord {
	out := map[string][]rawRecord{}
	files, _ := filepath.Glob(prefix + ".*")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			var r rawRecord
			if err := json.Unmarshal(line, &r); err == nil && r.ID != "" {
				out[r.ID] = append(out[r.ID], r)
			}
		}
	}
	return out
}

// startRawApp runs the raw app in the test process on a loopback port, recording into
// prefix+".ref", and returns its address; it stops at the end of the test.
func startRawApp(t testing.TB, prefix string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(prefix+".ref", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	app := &rawApp{rec: f}
	done := make(chan struct{})
	go func() {
		app.serve(ln)
		close(done)
	}()
	t.Cleanup(func() {
		ln.Close()
		waitDone(t, done, 30*time.Second, "the reference raw app to stop")
		f.Close()
	})
	return ln.Addr().String()
}
