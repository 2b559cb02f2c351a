package listener

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// PrivateDir checks that dir is a directory only this user can use: a directory, not a
// symbolic link, owned by this uid, with no access for group or others. With create, a
// missing dir is made first (mode 0700). It guards the default control socket's directory
// in a shared /tmp, where another local user could otherwise put a file, a socket or an olio
// of theirs at the path first. The error, wrapping ErrNotPrivate, says what is wrong and how
// to fix it.
func PrivateDir(dir string, create bool) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make the directory of the control socket %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing there: nothing answers there either
	}
	if err != nil {
		return fmt.Errorf("the directory of the control socket %s: %w", dir, err)
	}
	uid := os.Getuid()
	why := ""
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		why = "it is a symbolic link"
	case !fi.IsDir():
		why = "it is not a directory"
	case st == nil || int(st.Uid) != uid:
		owner := -1
		if st != nil {
			owner = int(st.Uid)
		}
		why = fmt.Sprintf("it belongs to uid %d, not to you (uid %d)", owner, uid)
	case fi.Mode().Perm()&0o077 != 0:
		why = fmt.Sprintf("its mode is %04o: others may use it", fi.Mode().Perm())
	default:
		return nil
	}
	return fmt.Errorf("%w: %s: %s; remove it (someone else may have put it there), or give --control a path in a directory only you can write to",
		ErrNotPrivate, dir, why)
}
