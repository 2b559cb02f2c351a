package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// wrkThreadID gives each wrk thread its number, as the global id of its script.
const wrkThreadID = `local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end`

// wrkRandom sets a random key per request, from the same key space and with
// the same names as the Go generator's random workload.
const wrkRandom = `-- olio bench: random X-Olio-Key per request
local n = 10000
` + wrkThreadID + `
function init(args)
  n = tonumber(args[1]) or n
  math.randomseed(os.time() * 1000 + id)
end
function request()
  wrk.headers["X-Olio-Key"] = "k" .. math.random(0, n - 1)
  return wrk.format(nil, "/")
end
`

// wrkPerConn gives each wrk thread one key. wrk has no per-connection hook,
// so the harness runs one thread per connection (-t = -c): then each
// connection keeps one key for the whole run, named as the Go generator's.
const wrkPerConn = `-- olio bench: one X-Olio-Key per connection (one connection per thread)
` + wrkThreadID + `
function init(args)
  wrk.headers["X-Olio-Key"] = "user-" .. id
end
`

var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
)

// runWrk measures throughput with wrk against url and returns req/s.
func runWrk(ctx context.Context, dir, url string, wl workload, conns, threads, keys int, d time.Duration) (float64, error) {
	script, body := filepath.Join(dir, "wrk-random.lua"), wrkRandom
	if wl.perConn {
		script, body, threads = filepath.Join(dir, "wrk-conn.lua"), wrkPerConn, conns
	}
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		return 0, err
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk",
		"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", strconv.Itoa(secs)+"s",
		"--timeout", "10s", "-s", script, url, "--", strconv.Itoa(keys))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, out)
	}
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk: no Requests/sec in output: %s", out)
	}
	if bad := wrkNon2xx.FindSubmatch(out); bad != nil {
		return 0, fmt.Errorf("wrk: %s answers were not 2xx", bad[1])
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
