package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// watchDirs are the host directories whose changes mean kata-deploy (or an
// administrator) may have undone something: containerd's configuration and
// its imports, kata-deploy's per-shim directories and their config.d.
func (in *Installer) watchDirs() []string {
	dirs := []string{filepath.Dir(in.opt.ContainerdConf)}
	if cfg, err := loadContainerd(in.host, in.opt.ContainerdConf); err == nil {
		for _, f := range cfg.Files[1:] {
			dirs = append(dirs, filepath.Dir(f.Path))
		}
	}
	for _, base := range []string{"share/defaults/kata-containers/runtimes", "share/defaults/kata-containers/runtime-rs/runtimes"} {
		d := filepath.Join(in.opt.KataPrefix, base)
		dirs = append(dirs, d)
		entries, _ := os.ReadDir(in.host.abs(d))
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(d, e.Name()), filepath.Join(d, e.Name(), "config.d"))
			}
		}
	}
	return dirs
}

// watcher reports changes in the watched directories; -1 is no inotify.
type watcher struct{ fd int }

// watch starts watching before a pass, so that a change made while the pass
// runs still wakes the next one.
func (in *Installer) watch() watcher {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return watcher{fd: -1}
	}
	const mask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE | unix.IN_DELETE_SELF
	for _, dir := range in.watchDirs() {
		_, _ = unix.InotifyAddWatch(fd, in.host.abs(dir), mask) // a missing directory is not watched
	}
	return watcher{fd: fd}
}

// wait returns after d, when ctx ends (false), or soon after a change, so
// that a kata-deploy reinstall is undone in well under an interval. Our own
// writes wake it too: the pass after them changes nothing and the next
// waits in quiet. Without inotify it just sleeps. It closes w.
func (w watcher) wait(ctx context.Context, d time.Duration) bool {
	if w.fd < 0 {
		return sleep(ctx, d)
	}
	defer unix.Close(w.fd)
	deadline := time.Now().Add(d)
	buf := make([]byte, 64<<10)
	for {
		if ctx.Err() != nil {
			return false
		}
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		// Wake up at least every 200 ms to notice ctx.
		wait := min(left, 200*time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}, int(wait/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return sleep(ctx, left)
		}
		if n > 0 {
			_, _ = unix.Read(w.fd, buf)
			// Let the writer finish its burst (kata-deploy writes several files).
			return sleep(ctx, 500*time.Millisecond)
		}
	}
}
