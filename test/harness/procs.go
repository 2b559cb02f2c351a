package harness

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Procs starts a script's child processes (apps, proxies, olio) and owns them: StopAll
// ends every one of them and everything they started.
type Procs struct {
	starts chan startReq

	mu       sync.Mutex
	children []*Child
	dirs     []string // removed by KillAll
}

type startReq struct {
	cmd *exec.Cmd
	res chan<- error
}

// NewProcs returns an owner with no children yet.
func NewProcs() *Procs {
	p := &Procs{starts: make(chan startReq)}
	go p.starter()
	return p
}

// starter starts every child from one goroutine locked to one OS thread for
// the life of the harness: Pdeathsig fires when the thread that started a
// child exits, not the process, so a child must not be started from a thread
// the Go runtime may retire. The goroutine lives as long as the program.
func (p *Procs) starter() {
	runtime.LockOSThread()
	for r := range p.starts {
		r.res <- r.cmd.Start()
	}
}

// Child is one started process. Its stdout and stderr go to the file LogPath.
type Child struct {
	Name    string
	Pid     int
	LogPath string
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done

	stopOnce sync.Once
}

// Start runs argv with env (the complete environment) in its own process
// group, killed by the kernel if the script dies.
func (p *Procs) Start(name string, argv, env []string, logPath string) (*Child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	res := make(chan error, 1)
	p.starts <- startReq{cmd: cmd, res: res}
	if err := <-res; err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.Close() // the child has its own copy
	c := &Child{Name: name, Pid: cmd.Process.Pid, LogPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	p.mu.Lock()
	p.children = append(p.children, c)
	p.mu.Unlock()
	return c, nil
}

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ExitError describes an early exit with the tail of the child's log; it wraps ErrExited.
func (c *Child) ExitError() error {
	return fmt.Errorf("%s %w (%v); last output:\n%s", c.Name, ErrExited, c.err, Tail(c.LogPath, 2048))
}

// Stop sends SIGTERM to the child's process group, SIGKILL after grace, and
// then SIGKILL to every descendant that is still alive (children in process
// groups of their own, such as olio's routers and apps). It waits for the
// child to exit. Safe to call more than once and concurrently.
func (c *Child) Stop(grace time.Duration) {
	c.stopOnce.Do(func() {
		desc := Descendants(c.Pid) // before they are reparented
		_ = syscall.Kill(-c.Pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
		_ = syscall.Kill(-c.Pid, syscall.SIGKILL)
		for _, d := range desc {
			if d.Alive() {
				_ = syscall.Kill(d.Pid, syscall.SIGKILL)
			}
		}
		t = time.NewTimer(5 * time.Second)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
	})
}

// StopAll stops every child still running, all at once.
func (p *Procs) StopAll(grace time.Duration) {
	p.mu.Lock()
	cs := append([]*Child(nil), p.children...)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Stop(grace)
		}()
	}
	wg.Wait()
}

// RemoveOnKill has KillAll remove dir too.
func (p *Procs) RemoveOnKill(dir string) {
	p.mu.Lock()
	p.dirs = append(p.dirs, dir)
	p.mu.Unlock()
}

// KillAll is the emergency stop (a second Ctrl-C): SIGKILL to every child,
// its process group and its descendants at once, without waiting for a
// graceful stop in progress, then removes the temp dirs.
func (p *Procs) KillAll() {
	p.mu.Lock()
	cs, dirs := append([]*Child(nil), p.children...), p.dirs
	p.mu.Unlock()
	for _, c := range cs {
		if c.Exited() {
			continue
		}
		desc := Descendants(c.Pid)
		_ = syscall.Kill(-c.Pid, syscall.SIGKILL)
		for _, d := range desc {
			if d.Alive() {
				_ = syscall.Kill(d.Pid, syscall.SIGKILL)
			}
		}
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// Tail returns at most the last n bytes of the file at path.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - n
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}
