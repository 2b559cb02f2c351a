package mux

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A Listener whose directory is removed re-binds in a new one: the stream open on the
// session through the old socket goes on, new streams reach it at the new path once the
// Pool is told, and the old session closes after its last stream.
func TestRebindMovesWithoutCuttingStreams(t *testing.T) {
	oldDir, newDir := t.TempDir(), t.TempDir()
	oldPath, newPath := filepath.Join(oldDir, "peer.sock"), filepath.Join(newDir, "peer.sock")
	l := listen(t, oldPath)
	echo(t, l)
	p := newPool(t, oldPath)
	ctx := testCtx(t)

	busy, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	roundTrip(t, busy, "before")
	oldSess := busy.(*Stream).Session()

	if err := os.RemoveAll(oldDir); err != nil { // what rm -rf of the run dir does
		t.Fatal(err)
	}
	if err := l.Rebind(newPath); err != nil {
		t.Fatalf("Rebind: %v", err)
	}
	if g, e := l.Addr().String(), newPath; g != e {
		t.Errorf("Addr after Rebind is %s, want %s", g, e)
	}
	p.SetPeers([]string{newPath})
	roundTrip(t, busy, "during") // the open stream was not cut

	c, err := p.Open(ctx, 0)
	if err != nil {
		t.Fatalf("Open after the move: %v", err)
	}
	roundTrip(t, c, "after")
	if c.(*Stream).Session() == oldSess {
		t.Fatal("a new stream opened on the session through the old socket")
	}
	c.Close()
	if oldSess.IsClosed() {
		t.Fatal("the old session closed while a stream was still open on it")
	}
	busy.Close()
	select {
	case <-oldSess.CloseChan():
	case <-ctx.Done():
		t.Fatal("the old session was not closed after its last stream")
	}
}

// A Listener re-bound elsewhere leaves no file at the old path (when it is still its own
// socket there), and a closed Listener refuses to re-bind.
func TestRebindRemovesOldSocketAndRefusesWhenClosed(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, "old.sock"), filepath.Join(dir, "new.sock")
	l := listen(t, oldPath)
	if err := l.Rebind(newPath); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(oldPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old socket still there after Rebind: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(newPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left the new socket: %v", err)
	}
	if err := l.Rebind(filepath.Join(dir, "again.sock")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Rebind after Close: %v, want ErrClosed", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "again.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused Rebind left its socket: %v", err)
	}
}
