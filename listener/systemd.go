package listener

import (
	"log/slog"
	"os"

	"github.com/olio-dev/olio/monitor"
)

// SystemdNotifier returns a function that sends sd_notify(3) states to $NOTIFY_SOCKET, or
// nil when olio was not started by systemd with Type=notify.
func SystemdNotifier(logger *slog.Logger) func(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	return func(state string) {
		if err := monitor.SendNotify(path, state); err != nil {
			logger.Warn("systemd notify", "err", err)
		}
	}
}
