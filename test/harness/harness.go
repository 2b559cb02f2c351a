// Package harness is what the programs under test/ share: the end-to-end tests, the
// benchmark (test/bench), the soak (test/soak) and the hand-made mutants
// (test/handmutants). It finds and builds the module (ModuleRoot, Build); starts and owns
// child processes (Procs, Child: killed with the script, stopped with everything they
// started); reads /proc (ReadStat, Tree, Descendants, ProcBytes); and runs one `olio
// serve` (Serve: its address, control socket, secret and command line, its status over the
// control socket with listener.Client, and a wait until its workers are settled).
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/olio-dev/olio/listener"
)

// ModuleRoot is the directory of the go.mod that `go env GOMOD` names: the scripts run
// from inside the olio module (go run ./test/…).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the olio module: run it from the repository (go run ./test/…)")
	}
	return filepath.Dir(mod), nil
}

// Build compiles the package pkg of the module at root (such as ./cmd/olio) to out, with
// go build's flags (such as -race).
func Build(ctx context.Context, root, pkg, out string, flags ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// FreePort is a loopback TCP port that was free a moment ago. It is taken below the
// kernel's ephemeral range (ip_local_port_range) when there is room there: a port from
// that range, free when looked at, can become the local port of any outgoing connection
// (of this test or one running beside it) before the caller binds it; one below it is
// only ever given out on purpose.
func FreePort() (int, error) {
	if low := ephemeralLow(); low > freePortFloor+1000 {
		for range 100 {
			p := freePortFloor + mrand.IntN(low-freePortFloor)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				l.Close()
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortFloor keeps FreePort's ports above the well-known and common service ports.
const freePortFloor = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (0 when unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}

// Serve is one `olio serve` as a script runs it: on a free loopback port, with its
// control socket and its output file in the script's directory, and a secret of its own.
type Serve struct {
	Addr    string // the public host:port
	Control string // the control socket's path
	Secret  string
	Log     string // the path for olio's output (the script opens it)
	client  *listener.Client
}

// NewServe picks the address, the paths in dir (named after the port, so that several
// can share dir) and the secret of an `olio serve` to start.
func NewServe(dir string) (*Serve, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	s := &Serve{
		Addr:    "127.0.0.1:" + strconv.Itoa(port),
		Control: filepath.Join(dir, fmt.Sprintf("olio-%d.sock", port)),
		Secret:  hex.EncodeToString(b),
		Log:     filepath.Join(dir, fmt.Sprintf("olio-%d.log", port)),
	}
	s.client = listener.NewClient(s.Control)
	return s, nil
}

// Args is the command line that runs it: bin (the olio binary) serve with workers workers
// on s's address, control socket and secret, then extra (flags, and maybe `-- app…`).
func (s *Serve) Args(bin string, workers int, extra ...string) []string {
	return append([]string{bin, "serve", "--listen", s.Addr, "--workers", strconv.Itoa(workers),
		"--control", s.Control, "--secret", s.Secret}, extra...)
}

// statusTimeout bounds one status request.
const statusTimeout = 30 * time.Second

// Status asks the master for the cluster's status over its control socket.
func (s *Serve) Status(ctx context.Context) (*listener.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := s.client.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("olio status: %w", err)
	}
	return st, nil
}

// Settled reports whether st has want members, every one ready with a router and an app,
// none of whose pids is in gone (the processes the script expects to be replaced: the
// apps a HUP replaces, a process it killed).
func Settled(st *listener.Status, want int, gone map[int]bool) bool {
	if st.Members != want || st.Ready != want {
		return false
	}
	for _, w := range st.Workers {
		if w.Member && (w.State != "ready" || w.RouterPID == 0 || w.AppPID == 0 || gone[w.AppPID] || gone[w.RouterPID]) {
			return false
		}
	}
	return true
}

// settlePoll is how often WaitSettled asks for the status.
const settlePoll = 50 * time.Millisecond

// ErrExited is returned when a process exits while a script waits for it (WaitSettled,
// Child.ExitError).
var ErrExited = errors.New("exited")

// WaitSettled asks for the status until it is Settled(want, gone), and returns the last
// status; it gives up when ctx ends or exited (closed when the master has exited) is.
func (s *Serve) WaitSettled(ctx context.Context, want int, gone map[int]bool, exited <-chan struct{}) (*listener.Status, error) {
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	var last error
	for {
		st, err := s.Status(ctx)
		if err == nil && Settled(st, want, gone) {
			return st, nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%d workers not settled: %w (last: %w)", want, ctx.Err(), last)
			}
			return nil, fmt.Errorf("%d workers not settled: %w", want, ctx.Err())
		case <-exited:
			return nil, ErrExited
		case <-tick.C:
		}
	}
}
