package listener

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
)

// StatsTimeout bounds how long Status and a metrics scrape wait for one router's counters.
// A router that does not answer in time is shown with what the master already knows.
const StatsTimeout = 2 * time.Second

// Status is the cluster at one instant, as `olio status` shows it.
type Status struct {
	PID           int            `json:"pid"`            // the master's pid
	Listen        string         `json:"listen"`         // the public address
	Members       int            `json:"members"`        // workers that own keys
	Ready         int            `json:"ready"`          // members whose app is ready
	Epoch         uint64         `json:"epoch"`          // membership epoch, bumped by every resize
	UptimeSeconds float64        `json:"uptime_seconds"` // since the master started
	Workers       []WorkerStatus `json:"workers"`
	RunDir        string         `json:"run_dir"` // the private run directory (routers' sockets)
	// RunDirNote says when and why the master last made a new run directory (the one it
	// had was removed or replaced); empty if it never had to.
	RunDirNote string `json:"run_dir_note,omitempty"`
}

// WorkerStatus is one worker: its router, its app and its counters. Counters are the
// current router's: they start again from zero when a router is restarted.
type WorkerStatus struct {
	Index         int     `json:"index"`
	RouterPID     int     `json:"router_pid"`     // 0 while there is no router
	AppPID        int     `json:"app_pid"`        // 0 while there is no app
	State         string  `json:"state"`          // starting, ready, backoff, stopping, stopped
	UptimeSeconds float64 `json:"uptime_seconds"` // of the current app
	Restarts      int     `json:"restarts"`       // unexpected exits of the app and the router
	RSSBytes      uint64  `json:"rss_bytes"`      // resident memory of router and app
	InFlight      int64   `json:"in_flight"`      // requests in the app now
	Served        uint64  `json:"served"`         // requests answered by the app
	Forwarded     uint64  `json:"forwarded"`      // requests sent on to their owner
	ForwardedIn   uint64  `json:"forwarded_in"`   // requests received from other workers
	HandedOff     uint64  `json:"handed_off"`     // connections passed to their owner
	HandedIn      uint64  `json:"handed_in"`      // connections received from other workers
	HoldSeconds   float64 `json:"hold_seconds"`   // how long the last hand-over held the keys that moved
	UpgradesOpen  int64   `json:"upgrades_open"`  // upgraded connections (WebSocket) open now
	UpgradesEnded uint64  `json:"upgrades_ended"` // upgraded connections a hand-over ended (their key moved)
	Draining      int     `json:"draining"`       // old app instances still draining after a rolling restart
	Goroutines    int     `json:"goroutines"`     // in the router, for leak checks
	OpenFDs       int     `json:"open_fds"`       // of the router, for leak checks
	Member        bool    `json:"member"`         // owns keys (false while joining or leaving)
	CrashLooping  bool    `json:"crash_looping,omitempty"`
	Error         string  `json:"error,omitempty"` // why the router's counters are missing
}

// Status asks every router for its counters, each bounded by StatsTimeout and ctx, and
// adds what the master knows: router pids, restarts and memory.
func (m *Master) Status(ctx context.Context) Status {
	st, _ := m.gather(ctx)
	return st
}

// gather is Status plus each worker's raw Stats (nil where the router did not answer),
// for the metrics collector.
func (m *Master) gather(ctx context.Context) (Status, []*descend.Stats) {
	v := m.snapshot()
	workers, members, epoch := v.workers, v.members, v.epoch
	st := Status{
		PID:           os.Getpid(),
		Listen:        m.addr.String(),
		Members:       members,
		Epoch:         epoch,
		UptimeSeconds: time.Since(m.start).Seconds(),
		Workers:       make([]WorkerStatus, len(workers)),
		RunDir:        m.RunDir(),
	}
	if note := m.runDirNote.Load(); note != nil {
		st.RunDirNote = *note
	}
	stats := make([]*descend.Stats, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.Workers[i], stats[i] = m.workerStatus(ctx, w)
			st.Workers[i].Member = w.index < members
		}()
	}
	wg.Wait()
	for _, w := range st.Workers {
		if w.Member && w.State == string(descend.StateReady) {
			st.Ready++
		}
	}
	return st, stats
}

// workerStatus asks one router for its Stats and fills in the rest.
func (m *Master) workerStatus(ctx context.Context, w *worker) (WorkerStatus, *descend.Stats) {
	rs := w.sup.Status()
	ws := WorkerStatus{Index: w.index, RouterPID: rs.Pid, Restarts: rs.Restarts, CrashLooping: rs.CrashLooping}
	ctx, cancel := context.WithTimeout(ctx, StatsTimeout)
	defer cancel()
	var stats *descend.Stats
	ans, err := w.call(ctx, &descend.StatsRequest{ID: m.nextID()})
	if s, ok := ans.(*descend.Stats); err == nil && ok {
		stats = s
		ws.AppPID = s.AppPID
		ws.State = string(s.State)
		ws.Restarts += s.Restarts
		ws.CrashLooping = ws.CrashLooping || s.CrashLooping
		ws.InFlight, ws.Served = s.InFlight, s.Served
		ws.Forwarded, ws.ForwardedIn = s.ForwardedOut, s.ForwardedIn
		ws.HandedOff, ws.HandedIn = s.HandedOut, s.HandedIn
		ws.HoldSeconds = s.LastHold.Seconds()
		ws.UpgradesOpen, ws.UpgradesEnded = s.UpgradesOpen, s.UpgradesEnded
		ws.Goroutines, ws.OpenFDs = s.Goroutines, s.OpenFDs
		ws.Draining = s.Draining
		if !s.AppStarted.IsZero() && s.AppPID > 0 {
			ws.UptimeSeconds = time.Since(s.AppStarted).Seconds()
		}
	} else {
		last := w.lastState()
		ws.AppPID = last.AppPID
		ws.State = string(rs.State)
		if rs.State == monitor.StateReady {
			ws.State = string(last.State)
		}
		if err != nil {
			ws.Error = err.Error()
		}
	}
	for i, pid := range []int{ws.RouterPID, ws.AppPID} {
		if pid > 0 && (i == 0 || pid != ws.RouterPID) { // an embedded worker is one process
			if n, err := monitor.RSS(pid); err == nil {
				ws.RSSBytes += n
			}
		}
	}
	return ws, stats
}
