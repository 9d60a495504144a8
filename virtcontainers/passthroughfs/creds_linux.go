package passthroughfs

import (
	"runtime"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// callerCreds makes new files belong to the guest caller, as virtiofsd does
// for CREATE, MKDIR, MKNOD and SYMLINK: the calling OS thread takes the
// caller's fsuid and fsgid (thread-local in Linux, unlike setuid in Go) until
// restore. Permission checks on the parent directory then apply to the
// caller too.
type callerCreds struct{ switched bool }

func (fs *FS) becomeCaller(c *fuse.Caller) (callerCreds, syscall.Errno) {
	if !fs.asCaller || (c.Uid == 0 && c.Gid == 0) {
		return callerCreds{}, 0
	}
	runtime.LockOSThread()
	if !setfsgid(c.Gid) {
		runtime.UnlockOSThread()
		return callerCreds{}, syscall.EPERM
	}
	if !setfsuid(c.Uid) {
		if setfsgid(0) {
			runtime.UnlockOSThread()
		}
		return callerCreds{}, syscall.EPERM
	}
	return callerCreds{switched: true}, 0
}

// restore returns the thread to root. A thread that cannot be restored stays
// locked to its goroutine and dies with it, as Go does for such threads.
func (c callerCreds) restore() {
	if !c.switched {
		return
	}
	if setfsuid(0) && setfsgid(0) {
		runtime.UnlockOSThread()
	}
}

// setfsuid and setfsgid report success by reading the value back: the
// syscalls always return the previous value.
func setfsuid(uid uint32) bool {
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	cur, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
	return uint32(cur) == uid
}

func setfsgid(gid uint32) bool {
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	cur, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
	return uint32(cur) == gid
}
