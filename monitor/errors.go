package monitor

import "errors"

// Errors returned by this package. Test for them with errors.Is: most are
// returned wrapped with the name of the child and the underlying cause.
var (
	// ErrStart means the command could not be started at all: the
	// executable is missing or not executable, the directory does not
	// exist, or Command returned an error. It wraps the cause from os/exec.
	// The Supervisor counts it as a crash and retries with backoff; callers
	// that want a clear error before the first start use [Check].
	ErrStart = errors.New("cannot start command")

	// ErrExited means the child exited while something was waiting on it
	// (readiness, a dial). It wraps the child's exit error when there is one.
	ErrExited = errors.New("child exited")

	// ErrReadyTimeout means the child did not become ready within the
	// Supervisor's ReadyTimeout; it has been stopped.
	ErrReadyTimeout = errors.New("child not ready in time")

	// ErrStopped means the Supervisor is not running: Run has returned (or
	// was already called once), so a Restart cannot be served.
	ErrStopped = errors.New("supervisor stopped")

	// ErrNoCommand means a Supervisor was run without a Command function.
	ErrNoCommand = errors.New("supervisor has no Command")

	// ErrClosed means a Notify socket was closed before READY=1 arrived.
	ErrClosed = errors.New("notify socket closed")
)
