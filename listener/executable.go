package listener

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// checkExecutable reports an app that exec.LookPath accepts but the kernel will not run,
// so that olio refuses it at once instead of restarting it for ever: a file that is
// neither an ELF binary nor a #! script (exec format error), or a script whose
// interpreter does not exist. name is the app as the user gave it, for the message; path
// is what LookPath found. Formats registered with binfmt_misc are accepted.
func checkExecutable(name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // execute-only (a binary may be): the kernel will say
	}
	defer f.Close()
	head := make([]byte, 256) // the kernel's BINPRM_BUF_SIZE
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return nil
	case bytes.HasPrefix(head, []byte("#!")):
		return checkInterpreter(name, head)
	case binfmtMisc(path, head):
		return nil
	}
	return fmt.Errorf("app %s is not an executable file (no ELF header or #! line); give a program, or a script whose first line is #! and its interpreter", name)
}

// checkInterpreter checks the interpreter named on a script's #! line, and the program
// that `#!/usr/bin/env PROG` runs.
func checkInterpreter(name string, head []byte) error {
	line, _, _ := bytes.Cut(head[2:], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return fmt.Errorf("app %s: its #! line names no interpreter; write e.g. #!/bin/sh", name)
	}
	interp := fields[0]
	if !filepath.IsAbs(interp) {
		return nil // relative to the app's working directory: the kernel will say
	}
	fi, err := os.Stat(interp)
	switch {
	case err != nil:
		return fmt.Errorf("app %s: its interpreter %s does not exist; fix the #! line or install it", name, interp)
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return fmt.Errorf("app %s: its interpreter %s is not an executable file; fix the #! line", name, interp)
	}
	if filepath.Base(interp) == "env" && len(fields) > 1 && !strings.HasPrefix(fields[1], "-") && !strings.Contains(fields[1], "=") {
		if _, err := exec.LookPath(fields[1]); err != nil {
			return fmt.Errorf("app %s: its interpreter %s (run by %s) is not in $PATH; install it or fix the #! line", name, fields[1], interp)
		}
	}
	return nil
}

// binfmtDir is where the kernel lists the formats registered with binfmt_misc.
var binfmtDir = "/proc/sys/fs/binfmt_misc"

// binfmtMisc reports whether an enabled binfmt_misc entry matches the file: by its name's
// extension, or by its magic bytes under the entry's mask.
func binfmtMisc(path string, head []byte) bool {
	ents, err := os.ReadDir(binfmtDir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(binfmtDir, e.Name()))
		if err != nil || !bytes.HasPrefix(b, []byte("enabled")) {
			continue
		}
		if binfmtMatches(string(b), path, head) {
			return true
		}
	}
	return false
}

// binfmtMatches matches one binfmt_misc entry (as the kernel prints it) against a file.
func binfmtMatches(entry, path string, head []byte) bool {
	var offset int
	var magic, mask []byte
	for _, line := range strings.Split(entry, "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "extension":
			return strings.HasSuffix(path, v) && v != ""
		case "offset":
			offset, _ = strconv.Atoi(v)
		case "magic":
			magic, _ = hex.DecodeString(v)
		case "mask":
			mask, _ = hex.DecodeString(v)
		}
	}
	if len(magic) == 0 || offset < 0 || offset+len(magic) > len(head) {
		return false
	}
	for i, m := range magic {
		b := head[offset+i]
		if i < len(mask) {
			b &= mask[i]
		}
		if b != m {
			return false
		}
	}
	return true
}

// unwrapPath drops an *os.PathError's operation and path, which the message names
// already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
