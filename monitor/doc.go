// Package monitor supervises one child process: it starts it, decides when
// it is ready, restarts it with exponential backoff when it crashes, replaces
// it without a gap (start new, wait ready, switch, drain old, stop old), stops
// it gracefully (SIGTERM to its process group, SIGKILL after a grace period)
// and reads its resident memory.
//
// olio uses it twice (see ../shared/DESIGN.md): the master (package listener)
// supervises its routers, and every router supervises its app.
//
// All operating-system effects go through the small [Starter] and [Process]
// interfaces, so the [Supervisor]'s state machine is tested with fake processes
// and a fake clock. [OS] is the real starter: every child runs in its own
// process group and is killed (Pdeathsig) when its parent dies. Go ties
// Pdeathsig to the OS thread that forked, not to the process, so OS forks
// every child from one goroutine locked to one thread that lives as long as
// the program (see [StarterGoroutine] for leak checkers).
//
// Readiness is either a successful connect ([WaitDial]) or systemd's
// notification protocol (READY=1 on $NOTIFY_SOCKET, see [Notify]).
package monitor
