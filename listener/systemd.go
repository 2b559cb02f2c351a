package listener

import (
	"log/slog"
	"net"
	"os"
)

// SystemdNotifier returns a function that sends sd_notify(3) states to $NOTIFY_SOCKET, or
// nil when olio was not started by systemd with Type=notify.
func SystemdNotifier(logger *slog.Logger) func(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	return func(state string) {
		c, err := net.DialUnix("unixgram", nil, addr)
		if err != nil {
			logger.Warn("systemd notify", "err", err)
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte(state)); err != nil {
			logger.Warn("systemd notify", "err", err)
		}
	}
}
