package harness

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcKey names one process; the start time tells a reused pid apart.
type ProcKey struct {
	Pid   int
	Start uint64 // in clock ticks since boot
}

// Alive reports whether the process is still the one that was seen (a zombie counts:
// its parent has not reaped it yet).
func (k ProcKey) Alive() bool {
	st, err := ReadStat(k.Pid)
	return err == nil && st.Start == k.Start
}

// ProcStat is the part of /proc/<pid>/stat the harnesses use.
type ProcStat struct {
	ProcKey
	State string // R, S, D, Z, …
	PPid  int
	Comm  string
	Ticks uint64 // utime + stime, in USER_HZ, all threads
	RSS   uint64 // resident pages
}

// ReadStat parses /proc/<pid>/stat (see proc(5)).
func ReadStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if lp < 0 || rp < lp || rp+2 > len(b) {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[rp+2:])) // f[0] is field 3 (state)
	if len(f) < 22 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	num := func(field int) uint64 { // field numbers as in proc(5)
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	return ProcStat{
		ProcKey: ProcKey{Pid: pid, Start: num(22)},
		State:   f[0],
		PPid:    int(num(4)),
		Comm:    string(b[lp+1 : rp]),
		Ticks:   num(14) + num(15),
		RSS:     num(24),
	}, nil
}

// Node is a process in a tree, depth 0 being the root.
type Node struct {
	ProcStat
	Depth int
}

// Tree returns root and all its descendants, root first, each after its parent, from one
// pass over /proc; nil if root is gone.
func Tree(root int) []Node {
	rst, err := ReadStat(root)
	if err != nil {
		return nil
	}
	kids := map[int][]ProcStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(pid); err == nil {
			kids[st.PPid] = append(kids[st.PPid], st)
		}
	}
	out := []Node{{ProcStat: rst}}
	for i := 0; i < len(out); i++ {
		for _, k := range kids[out[i].Pid] {
			out = append(out, Node{ProcStat: k, Depth: out[i].Depth + 1})
		}
	}
	return out
}

// Descendants returns the processes below pid (not pid itself).
func Descendants(pid int) []ProcKey {
	var out []ProcKey
	for _, n := range Tree(pid) {
		if n.Depth > 0 {
			out = append(out, n.ProcKey)
		}
	}
	return out
}

// ProcField returns the value of the line "name: value" of /proc/<pid>/<file> (a file in
// status's format: status, smaps_rollup), without its surrounding blanks.
func ProcField(pid int, file, name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return "", err
	}
	return field(string(b), name)
}

// ProcBytes reads a "name: N kB" field of /proc/<pid>/<file>, in bytes.
func ProcBytes(pid int, file, name string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	return fieldBytes(string(b), name)
}

// field is the value of the line "name: value" of text.
func field(text, name string) (string, error) {
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc status: no %s", name)
}

// fieldBytes parses a "name:   123 kB" field of text, in bytes.
func fieldBytes(text, name string) (uint64, error) {
	v, err := field(text, name)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("/proc status %s: unexpected %q", name, v)
	}
	kb, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc status %s: %w", name, err)
	}
	return kb << 10, nil
}
