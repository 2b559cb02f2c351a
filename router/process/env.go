package process

import (
	"slices"
	"strings"

	"github.com/olio-dev/olio/monitor"
)

// notInherited lists the variables that no child of olio takes from its parent's
// environment: neither a router (or an embedded worker) from the master, nor an app from
// its router. Whatever a child should have of these, its parent sets itself.
var notInherited = []string{
	// systemd's readiness socket is the master's alone: a child that wrote READY=1 to it
	// would tell systemd the wrong thing. An app in notify mode gets its own from its router.
	monitor.NotifyEnv,
	// systemd's socket activation hands its sockets to the master alone (LISTEN_PID names
	// it); a child gets the listener as an inherited descriptor instead.
	"LISTEN_FDS",
	"LISTEN_PID",
	"LISTEN_FDNAMES",
	// The app's private port is its router's to choose: a PORT given to the master (by a
	// platform) is not the app's.
	"PORT",
	// The secret reaches a router over descend and an app from its router; one in the
	// master's environment ($OLIO_SECRET instead of --secret) goes no further.
	"OLIO_SECRET",
	// A child's place in the cluster is set by its parent: values inherited from an olio
	// further up (olio run as another olio's app) would place it wrongly.
	"OLIO_INDEX",
	"OLIO_WORKERS",
	"OLIO_ADDR",
	"OLIO_CLUSTER_ADDR",
	// Only the master makes an embedded worker: an app that calls router.Serve under a
	// plain router must serve on $PORT, not look for the master's descriptors.
	EnvEmbedded,
	EnvLogFormat,
}

// ScrubbedEnv names the variables ChildEnv removes.
func ScrubbedEnv() []string {
	return slices.Clone(notInherited)
}

// ChildEnv is the environment for a child of olio: environ less the variables no child
// inherits (see ScrubbedEnv), followed by set, "NAME=value" each.
func ChildEnv(environ []string, set ...string) []string {
	env := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(notInherited, k) {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}
