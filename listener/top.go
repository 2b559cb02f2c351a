package listener

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/olio-dev/olio/descend"
)

// controlTop is GET /top: a TopSnapshot, the raw counters olio top turns into rates and
// latency quantiles by comparing two snapshots.
const controlTop = "/top"

// TopSnapshot is the cluster's counters at one instant, for olio top: the status, and for
// each worker the counters a rate or a latency over a window is computed from (each a
// running total since its router started: a new router pid starts again from zero).
type TopSnapshot struct {
	Time   time.Time `json:"time"` // when the master took it
	Status Status    `json:"status"`
	// Handover says what moves keys now ("" when nothing does): workers joining or
	// leaving (a scale or a reload in progress), or a hot upgrade holding keys until the
	// old master has drained.
	Handover string        `json:"handover,omitempty"`
	Workers  []TopCounters `json:"workers"` // in Status.Workers' order
}

// TopCounters are one worker's counters beyond its WorkerStatus.
type TopCounters struct {
	Index        int               `json:"index"`
	Upgraded     uint64            `json:"upgraded"`      // connections its app upgraded (WebSocket)
	UpgradesOpen int64             `json:"upgrades_open"` // of which open now
	Held         uint64            `json:"held"`          // requests that waited for an owner or the app
	Duration     descend.Histogram `json:"duration"`      // request durations, cumulative
}

// Top takes a TopSnapshot, asking every router for its counters as Status does.
func (m *Master) Top(ctx context.Context) TopSnapshot {
	st, stats := m.gather(ctx)
	snap := TopSnapshot{Time: time.Now(), Status: st, Workers: make([]TopCounters, len(st.Workers))}
	joining := 0
	for i, w := range st.Workers {
		snap.Workers[i].Index = w.Index
		if !w.Member {
			joining++
		}
		if s := stats[i]; s != nil {
			snap.Workers[i].Upgraded, snap.Workers[i].UpgradesOpen = s.Upgraded, s.UpgradesOpen
			snap.Workers[i].Held, snap.Workers[i].Duration = s.Held, s.Duration
		}
	}
	switch {
	case m.heldKeys():
		snap.Handover = "hot upgrade: holding keys until the old master has drained"
	case joining > 0:
		snap.Handover = fmt.Sprintf("%d of %d workers joining or leaving", joining, len(st.Workers))
	}
	return snap
}

// heldKeys reports whether the routers hold their own keys for a hot upgrade's old master.
func (m *Master) heldKeys() bool {
	v := m.view.Load()
	return v != nil && v.held
}

// serveTop answers GET /top.
func (m *Master) serveTop(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, m.Top(r.Context()))
}

// Top asks for a TopSnapshot.
func (c *Client) Top(ctx context.Context) (*TopSnapshot, error) {
	var s TopSnapshot
	if err := c.do(ctx, http.MethodGet, controlTop, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
