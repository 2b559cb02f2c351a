package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// procs starts the harness's child processes (apps, proxies, olio) and owns
// them: stopAll ends every one of them and everything they started.
type procs struct {
	starts chan startReq

	mu       sync.Mutex
	children []*child
	dirs     []string // removed by killAll
}

type startReq struct {
	cmd *exec.Cmd
	res chan<- error
}

func newProcs() *procs {
	p := &procs{starts: make(chan startReq)}
	go p.starter()
	return p
}

// starter starts every child from one goroutine locked to one OS thread for
// the life of the harness: Pdeathsig fires when the thread that started a
// child exits, not the process, so a child must not be started from a thread
// the Go runtime may retire. The goroutine lives as long as the program.
func (p *procs) starter() {
	runtime.LockOSThread()
	for r := range p.starts {
		r.res <- r.cmd.Start()
	}
}

// child is one started process. Its stdout and stderr go to the file logPath.
type child struct {
	name    string
	pid     int
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done

	stopOnce sync.Once
}

// start runs argv with env (the complete environment) in its own process
// group, killed by the kernel if the harness dies.
func (p *procs) start(name string, argv, env []string, logPath string) (*child, error) {
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
	c := &child{name: name, pid: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	p.mu.Lock()
	p.children = append(p.children, c)
	p.mu.Unlock()
	return c, nil
}

// exited reports whether the child has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// errExited is returned when a child exits while the harness waits for it.
var errExited = errors.New("exited")

// exitError describes an early exit with the tail of the child's log.
func (c *child) exitError() error {
	return fmt.Errorf("%s %w (%v); last output:\n%s", c.name, errExited, c.err, tail(c.logPath, 2048))
}

// stop sends SIGTERM to the child's process group, SIGKILL after grace, and
// then SIGKILL to every descendant that is still alive (children in process
// groups of their own, such as olio's routers and apps). It waits for the
// child to exit. Safe to call more than once and concurrently.
func (c *child) stop(grace time.Duration) {
	c.stopOnce.Do(func() {
		desc := descendants(c.pid) // before they are reparented
		_ = syscall.Kill(-c.pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		for _, d := range desc {
			if d.alive() {
				_ = syscall.Kill(d.pid, syscall.SIGKILL)
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

// stopAll stops every child still running, all at once.
func (p *procs) stopAll(grace time.Duration) {
	p.mu.Lock()
	cs := append([]*child(nil), p.children...)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(grace)
		}()
	}
	wg.Wait()
}

// removeOnKill has killAll remove dir too.
func (p *procs) removeOnKill(dir string) {
	p.mu.Lock()
	p.dirs = append(p.dirs, dir)
	p.mu.Unlock()
}

// killAll is the emergency stop (a second Ctrl-C): SIGKILL to every child,
// its process group and its descendants at once, without waiting for a
// graceful stop in progress, then removes the temp dirs.
func (p *procs) killAll() {
	p.mu.Lock()
	cs, dirs := append([]*child(nil), p.children...), p.dirs
	p.mu.Unlock()
	for _, c := range cs {
		if c.exited() {
			continue
		}
		desc := descendants(c.pid)
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		for _, d := range desc {
			if d.alive() {
				_ = syscall.Kill(d.pid, syscall.SIGKILL)
			}
		}
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// tail returns at most the last n bytes of the file at path.
func tail(path string, n int64) string {
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
