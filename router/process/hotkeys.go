package process

import (
	"net/http"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/hotkeys"
	"github.com/olio-dev/olio/router/keys"
)

// Hot-key counting (--key-stats) is package hotkeys; what follows ties it to the router:
// which requests count, and the master's KeysRequest.

// HotKeysWindow is how far back `olio keys` looks: counts cover the last HotKeysWindow, less
// up to one step of it.
const HotKeysWindow = hotkeys.Window

// HotKeysCapacity is the number of keys each worker tracks per step of the window. A key's
// count is at most 1/HotKeysCapacity of its worker's requests in the window from the truth.
const HotKeysCapacity = hotkeys.Capacity

// countKey counts a request this router serves as the owner of its key (hash h).
func (r *Router) countKey(h uint64, key string, owner int) {
	if owner == r.index {
		r.hot.Record(r.conf().KeyStats, h, key)
	}
}

// countForwarded counts a request a peer forwarded to this router, reading its key again.
func (r *Router) countForwarded(req *http.Request) {
	set := r.settings()
	if set.cfg.KeyStats != descend.KeyStatsOn && set.cfg.KeyStats != descend.KeyStatsHashed {
		return
	}
	if key, ok := set.key.Extract(req); ok {
		h := xxhash.Sum64String(key)
		r.countKey(h, key, keys.Jump(h, r.workers()))
	}
}

// onKeys answers the master's KeysRequest with this router's summary.
func (r *Router) onKeys(m descend.Message) error {
	req := m.(*descend.KeysRequest)
	set := r.settings()
	k := r.hot.Snapshot(time.Now(), req.Top, set.cfg.KeyStats, set.secret)
	k.ID, k.Index = req.ID, r.index
	return r.ctl.Send(k)
}
