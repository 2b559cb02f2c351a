// Command handmutants checks that the tests catch what they claim to, where a mutation tool
// cannot reach: the end-to-end tests in test/ build the olio binary and run it, so a change
// in the code only shows through them. It copies the module to a scratch directory, checks
// that every named test passes there, then makes one deliberate small bug at a time (a
// mutant: an exact text replacement in one file), runs the tests named for it, and reports
// whether they failed (killed) or passed (lived). gremlins (test/mutate.sh) covers the
// packages under their unit tests; test/MUTANTS.md lists these mutants and their results.
//
//	go run ./test/handmutants                # every mutant, about five minutes
//	go run ./test/handmutants -run E3,E7     # some of them
//
// It exits 1 if a mutant lived or no longer applies (the code it changes has moved: update
// its text here). It is a script, not part of go test.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/olio-dev/olio/test/harness"
)

// mutant is one deliberate bug.
type mutant struct {
	id       string
	file     string // relative to the module root
	old, new string // old must occur exactly once in file
	pkg      string // the package whose tests run; "./test/" when empty
	tests    string // go test -run pattern
	promise  string // what the bug breaks
}

var mutants = []mutant{
	{id: "E1", file: "router/process/accept.go",
		old: "\tif p != nil {\n\t\tp.stop(ctx)\n", new: "\tif p != nil {\n\t\tp.ln.Close()\n",
		tests:   "^TestLifecycleGracefulStopForwardedOnly$",
		promise: "a stopping router waits for the requests on its public connections, forwarded ones too"},
	{id: "E2", file: "router/process/router.go",
		old: "\"workers\", mm.Workers)\n\tr.updateAccepting()", new: "\"workers\", mm.Workers)",
		tests:   "^TestLifecycleTTIN$",
		promise: "after TTIN the new worker accepts public connections"},
	{id: "E3", file: "router/process/servers.go",
		old: "\tlimit := r.conf().MaxHeaderBytes\n", new: "\tlimit := 2 * r.conf().MaxHeaderBytes\n",
		tests:   "^(TestHostileHeaderTooLarge|TestHostileHeaderLimitExact)$",
		promise: "a header just past --max-header-bytes gets 431"},
	{id: "E4", file: "router/process/servers.go",
		old: "\tlimit := r.conf().MaxHeaderBytes\n", new: "\tlimit := r.conf().MaxHeaderBytes + peerHeaderSlack\n",
		tests:   "^(TestHostileHeaderTooLarge|TestHostileHeaderLimitExact)$",
		promise: "the public side does not take the peer side's larger header limit"},
	{id: "E5", file: "router/process/secret.go",
		old: "\tdelete(h, HeaderSecret)\n", new: "",
		tests:   "^TestHostileSecretNeverShown$",
		promise: "X-Olio-Secret never reaches the app"},
	{id: "E6", file: "router/process/secret.go",
		old: "digest([]byte(got[0]))) == 1", new: "digest([]byte(got[0]))) >= 0",
		tests:   "^TestCore$",
		promise: "a wrong secret gets 403"},
	{id: "E7", file: "router/process/output.go",
		old: "if len(l.secret) > 0 && bytes.Contains(line, l.secret) {", new: "if false && bytes.Contains(line, l.secret) {",
		pkg:     "./router/process/", // no end-to-end app prints its secret
		tests:   "^TestLineLoggerLinesFlushAndSecret$",
		promise: "an app that prints the secret is logged with [secret] instead"},
	{id: "E8", file: "listener/rundir.go",
		old: "os.Chmod(dir, 0o700)", new: "os.Chmod(dir, 0o755)",
		tests:   "^TestHostileRunDirPermissions$",
		promise: "the run directory is 0700"},
	{id: "E9", file: "mux/socket.go",
		old: "os.Chmod(path, 0o600)", new: "os.Chmod(path, 0o666)",
		tests:   "^TestHostileRunDirPermissions$",
		promise: "the routers' sockets are 0600"},
	{id: "E10", file: "monitor/starter.go",
		old: "cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL", new: "cmd.SysProcAttr.Pdeathsig = 0",
		tests:   "^TestLifecycleKillRouter$",
		promise: "an app does not outlive its router killed with -9 (with the master killed, routers see EOF and stop their apps anyway)"},
	{id: "E11", file: "router/internal/connpool/connpool.go",
		old: "\tcase http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:\n\t\treturn true\n", new: "\tcase http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:\n\t\treturn false\n",
		tests:   "^TestLifecycleKillApp$",
		promise: "an idempotent request in a killed app is repeated on its replacement"},
	{id: "E12", file: "router/process/app.go",
		old: "for inst.inFlight.Load() > 0 {", new: "for inst.inFlight.Load() > 0 && false {",
		tests:   "^TestHostileHUPDrainsAppThatDiesOnTerm$",
		promise: "a rolling restart drains the old app before stopping it"},
	{id: "E13", file: "router/process/servers.go",
		old: "\tif n <= 0 {\n\t\treturn ln\n\t}", new: "\tif n <= 0 || n > 0 {\n\t\treturn ln\n\t}",
		tests:   "^TestHostileMaxConns$",
		promise: "--max-conns bounds a router's connections"},
	{id: "E14", file: "router/process/handoff.go",
		old: "!r.conf().Handoff || r.accept == nil ||", new: "r.conf().Handoff || r.accept == nil ||",
		tests:   "^(TestHandoffKeepsConnectionOnOwner|TestNoHandoffForwardsInstead)$",
		promise: "a connection is handed to the owner of its first request's key (and not with --handoff=false)"},
	{id: "E15", file: "router/process/handler.go",
		old:     "\t\tw.Header().Set(\"Retry-After\", \"1\")\n\t\tr.fail(w, http.StatusServiceUnavailable, fmt.Sprintf(\"olio: worker %d's app is not ready",
		new:     "\t\tr.fail(w, http.StatusServiceUnavailable, fmt.Sprintf(\"olio: worker %d's app is not ready",
		tests:   "^TestHostileCrashLoop$",
		promise: "a request for an app that is not ready gets 503 with Retry-After"},
	{id: "E16", file: "router/internal/connpool/connpool.go",
		old: " && !errors.Is(err, ErrAnswerStarted) && Replayable(req) {", new: " && !errors.Is(err, ErrAnswerStarted) {",
		tests:   "^(TestLifecycleKillApp|TestHostileAppNoResend)$",
		promise: "a bodiless POST in flight in a killed app gets 502, it is not run again on the replacement"},
	{id: "E17", file: "router/process/drainer.go",
		old: "\tfor d.left() > 0 {", new: "\tfor d.left() > 0 && false {",
		tests:   "^TestLifecycleTTOUFinishesForwarded$",
		promise: "a router leaving by TTOU finishes the requests it forwarded"},
	// Round 3: bugs placed by behaviour in the peer and app legs (test/round3_test.go,
	// router/process/round3_test.go, router/internal/httprules/query_fuzz_test.go).
	{id: "E18", file: "router/process/peerforward.go",
		old: "\t\t\tpanic(http.ErrAbortHandler) // the server cuts the client's connection\n", new: "\t\t\treturn\n",
		tests:   "^TestRound3CutAnswerIsAnError$",
		promise: "a forwarded answer its owner breaks off mid-body reaches the client as an error, not as a short answer that ends cleanly"},
	{id: "E19", file: "router/process/peerserve.go",
		old: "context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, peerHTTPServer), fromPeer, true)", new: "context.WithValue(context.Background(), fromPeer, true)",
		tests:   "^TestRound3CutAnswerIsAnError$",
		promise: "an app's answer cut short mid-body on the owner of a forwarded request breaks the stream off (no clean end frame)"},
	{id: "E20", file: "router/internal/appleg/engine.go",
		old: "\t\t\tpanic(http.ErrAbortHandler)\n\t\t}\n\t\treturn\n", new: "\t\t\treturn\n\t\t}\n\t\treturn\n",
		tests:   "^TestRound3CutAnswerIsAnError$",
		promise: "an app's answer cut short mid-body on the fast path reaches the client as an error"},
	{id: "E21", file: "router/internal/httprules/outbound.go",
		old: "if i+2 >= len(q) ||", new: "if i+2 > len(q) ||",
		tests:   "^TestRound3CutShortEscape$",
		promise: "a query ending in a cut-short escape (?q=%4) is answered, local and forwarded (no index out of range)"},
	{id: "E22", file: "router/process/peerforward.go",
		old: "\tdefer conn.Close()\n\tstop := context.AfterFunc", new: "\tstop := context.AfterFunc",
		tests:   "^TestRound3TunnelEndedByApp$",
		promise: "a forwarded tunnel the app ends ends the client's connection (EOF), with no goroutine or fd left"},
	{id: "E23", file: "router/process/peerserve.go",
		old: "\tif w.err == nil {\n\t\tw.err = w.c.bw.Flush()\n\t}\n}", new: "}",
		tests:   "^TestRound3StreamNotHeldBack$",
		promise: "a streamed (SSE) answer's flushed event crosses the peer leg at once, not when 4 KiB have built up"},
	{id: "E24", file: "router/internal/appleg/engine.go",
		old: "\t\t\t\trc.Flush() // as ReverseProxy", new: "\t\t\t\t_ = rc // as ReverseProxy",
		tests:   "^TestRound3StreamNotHeldBack$",
		promise: "a streamed (SSE) answer's flushed event reaches the client of the app's own router at once"},
	{id: "E25", file: "router/process/peerforward.go",
		old: "\t\t\tif rc != nil {\n\t\t\t\trc.Flush()\n\t\t\t}\n", new: "\t\t\tif rc != nil {\n\t\t\t}\n",
		tests:   "^TestRound3StreamNotHeldBack$",
		promise: "the accepting router passes each part of a forwarded streamed answer on at once"},
	{id: "U3", file: "router/process/peerforward.go", pkg: "./router/process/",
		old: "\t\t\tpanic(http.ErrAbortHandler) // the server cuts the client's connection\n", new: "\t\t\treturn\n",
		tests:   "^TestCutAnswerIsAnError$",
		promise: "a forwarded answer its owner breaks off mid-body reaches the client as an error"},
	{id: "U4", file: "router/process/peerserve.go", pkg: "./router/process/",
		old: "context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, peerHTTPServer), fromPeer, true)", new: "context.WithValue(context.Background(), fromPeer, true)",
		tests:   "^TestCutAnswerIsAnError$",
		promise: "an app's answer cut short on the owner of a forwarded request breaks the stream off"},
	{id: "U5", file: "router/internal/httprules/outbound.go", pkg: "./router/internal/httprules/",
		old: "if i+2 >= len(q) ||", new: "if i+2 > len(q) ||",
		tests:   "^FuzzOutboundURI$",
		promise: "the query check never reads past a cut-short escape"},
	{id: "U6", file: "router/process/peerforward.go", pkg: "./router/process/",
		old: "\tdefer conn.Close()\n\tstop := context.AfterFunc", new: "\tstop := context.AfterFunc",
		tests:   "^TestTunnelEndedByOwner$",
		promise: "a tunnel its owner ends ends the client's connection, no goroutine left"},
	{id: "U7", file: "router/process/peerserve.go", pkg: "./router/process/",
		old: "\tif w.err == nil {\n\t\tw.err = w.c.bw.Flush()\n\t}\n}", new: "}",
		tests:   "^TestPeerStreams$",
		promise: "a flushed part of a forwarded answer reaches the client before the answer ends (fails, not hangs)"},
	{id: "U1", file: "router/process/app.go", pkg: "./router/process/",
		old: "\ta.held.Add(1)\n", new: "\tif true {\n\t\treturn nil\n\t}\n\ta.held.Add(1)\n",
		tests:   "^TestHeldRequestServedWhenReady$",
		promise: "a request for an app that is not ready is held, not refused"},
	{id: "U2", file: "router/process/app.go", pkg: "./router/process/",
		old:     "\ta.current.Store(inst)\n\tclose(a.changed)\n\ta.changed = make(chan struct{})\n}\n\n// clearCurrent",
		new:     "\ta.current.Store(inst)\n}\n\n// clearCurrent",
		tests:   "^TestHeldRequestServedWhenReady$",
		promise: "a held request is served as soon as the app is ready"},
}

func main() {
	run := flag.String("run", "", "comma-separated mutant ids to try (default: all)")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound on one mutant's test run")
	flag.Parse()
	if err := mainErr(*run, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "handmutants:", err)
		os.Exit(1)
	}
}

func mainErr(run string, timeout time.Duration) error {
	chosen := mutants
	if run != "" {
		chosen = nil
		for _, id := range strings.Split(run, ",") {
			i := indexOf(id)
			if i < 0 {
				return fmt.Errorf("no mutant %q (ids: E1…E%d, U1…U%d)", id, countE(), len(mutants)-countE())
			}
			chosen = append(chosen, mutants[i])
		}
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "olio-handmutants-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := copyTree(root, scratch); err != nil {
		return fmt.Errorf("copy the module: %w", err)
	}

	// Every test must pass on the unchanged code, or a "killed" would mean nothing.
	byPkg := map[string][]string{}
	for _, m := range chosen {
		byPkg[m.pkgOrTest()] = append(byPkg[m.pkgOrTest()], strings.Trim(m.tests, "^$"))
	}
	for pkg, tests := range byPkg {
		pattern := "^(" + strings.Join(tests, "|") + ")$"
		if out, err := goTest(scratch, pkg, pattern, timeout); err != nil {
			return fmt.Errorf("the tests fail without any mutant (%s -run %s):\n%s", pkg, pattern, out)
		}
	}

	bad := 0
	fmt.Println("| id | file | promise | tests | result |")
	fmt.Println("|---|---|---|---|---|")
	for _, m := range chosen {
		result, err := m.try(scratch, timeout)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(result, "killed") {
			bad++
		}
		fmt.Printf("| %s | %s | %s | `%s` | %s |\n", m.id, m.file, m.promise, strings.ReplaceAll(m.tests, "|", `\|`), result)
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d mutants not killed", bad, len(chosen))
	}
	return nil
}

func (m mutant) pkgOrTest() string {
	if m.pkg == "" {
		return "./test/"
	}
	return m.pkg
}

// try applies m in dir, runs its tests and restores the file. The result is killed, lived,
// "not viable" (it does not build) or "stale" (its text is no longer in the file).
func (m mutant) try(dir string, timeout time.Duration) (string, error) {
	path := filepath.Join(dir, m.file)
	orig, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if n := strings.Count(string(orig), m.old); n != 1 {
		return fmt.Sprintf("stale: its text occurs %d times in %s", n, m.file), nil
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(orig), m.old, m.new, 1)), 0o644); err != nil {
		return "", err
	}
	defer os.WriteFile(path, orig, 0o644)
	build := exec.Command("go", "build", "./...")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		return "not viable: " + firstLine(string(out)), nil
	}
	start := time.Now()
	_, err = goTest(dir, m.pkgOrTest(), m.tests, timeout)
	took := time.Since(start).Round(time.Second)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return fmt.Sprintf("**lived** (%s)", took), nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("killed: timed out after %s", timeout), nil
	case errors.As(err, &exit):
		return fmt.Sprintf("killed (%s)", took), nil
	default:
		return "", err
	}
}

func goTest(dir, pkg, pattern string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", pattern, pkg)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), ctx.Err()
	}
	return string(out), err
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func indexOf(id string) int {
	for i, m := range mutants {
		if m.id == strings.TrimSpace(id) {
			return i
		}
	}
	return -1
}

func countE() int {
	n := 0
	for _, m := range mutants {
		if strings.HasPrefix(m.id, "E") {
			n++
		}
	}
	return n
}

// copyTree copies the module's regular files from src to dst, leaving out .git (so that no
// build asks git about the copy) and test/bench/results.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == ".git" { // a directory, or a file in a git worktree
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if rel == filepath.Join("test", "bench", "results") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
}
