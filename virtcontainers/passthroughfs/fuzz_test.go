package passthroughfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "file.txt", ".", "..", "...", "a/b", "", "a\x00", strings.Repeat("x", 255), strings.Repeat("x", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkName(name) != 0 {
			return
		}
		if name == "" || name == "." || name == ".." || len(name) > nameMax ||
			strings.ContainsAny(name, "/\x00") {
			t.Fatalf("accepted %q", name)
		}
		var cn cname
		p := cn.set(name)
		got := unix.BytePtrToString(p)
		if got != name {
			t.Fatalf("C name %q, want %q", got, name)
		}
	})
}

func FuzzFilterXattrList(f *testing.F) {
	f.Add([]byte("user.a\x00system.posix_acl_access\x00security.selinux\x00"))
	f.Add([]byte("\x00\x00system.posix_acl_default"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, list []byte) {
		var want []byte
		for _, n := range bytes.Split(list, []byte{0}) {
			if len(n) > 0 && !blockedXattr(string(n)) {
				want = append(append(want, n...), 0)
			}
		}
		got := filterXattrList(bytes.Clone(list))
		if !bytes.Equal(got, want) {
			t.Fatalf("filter(%q) = %q, want %q", list, got, want)
		}
	})
}

// FuzzSetAttr sends arbitrary SETATTR masks and values at one file: nothing
// but that file may change, and nothing may panic.
func FuzzSetAttr(f *testing.F) {
	f.Add(uint32(fuse.FATTR_MODE), uint32(0o4755), uint32(0), uint32(0), uint64(0), uint64(0), uint64(0), uint32(0), uint32(0))
	f.Add(uint32(fuse.FATTR_SIZE), uint32(0), uint32(0), uint32(0), uint64(1<<20), uint64(0), uint64(0), uint32(0), uint32(0))
	f.Add(uint32(fuse.FATTR_ATIME|fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW), uint32(0), uint32(0), uint32(0), uint64(0), uint64(1), uint64(2), uint32(3), uint32(2e9))
	f.Add(^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint32(0), ^uint32(0))
	share := newHostShare(f)
	target := filepath.Join(share.src, "target")
	sibling := filepath.Join(share.src, "sibling")
	require.NoError(f, os.WriteFile(sibling, []byte("unchanged"), 0o644))
	var sib unix.Stat_t
	require.NoError(f, unix.Stat(sibling, &sib))
	fs := newFS(f, share.src, Options{})
	f.Cleanup(func() { fs.Close() })
	f.Fuzz(func(t *testing.T, valid, mode, uid, gid uint32, size, atime, mtime uint64, ansec, mnsec uint32) {
		os.Remove(target)
		require.NoError(t, os.WriteFile(target, []byte("data"), 0o644))
		e := mustLookup(t, fs, rootID, "target")
		defer fs.Forget(e.NodeId, 1)
		in := fuse.SetAttrIn{}
		in.Valid = valid &^ fuse.FATTR_FH
		in.Mode, in.Uid, in.Gid, in.Size = mode, uid, gid, size%(64<<20)
		in.Atime, in.Mtime, in.Atimensec, in.Mtimensec = atime, mtime, ansec, mnsec
		in.NodeId = e.NodeId
		p := planSetattr(&in)
		if (p.mode != nil) != (valid&fuse.FATTR_MODE != 0) || p.mode != nil && *p.mode > 0o7777 {
			t.Fatalf("mode plan %v for valid %#x", p.mode, valid)
		}
		if p.chown != (valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0) {
			t.Fatalf("chown plan for valid %#x", valid)
		}
		if (p.times != nil) != (valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0) {
			t.Fatalf("times plan for valid %#x", valid)
		}
		var out fuse.AttrOut
		fs.SetAttr(nil, &in, &out)
		var now unix.Stat_t
		require.NoError(t, unix.Stat(sibling, &now))
		if now.Mode != sib.Mode || now.Size != sib.Size || now.Mtim != sib.Mtim || now.Uid != sib.Uid {
			t.Fatalf("sibling changed: %+v", now)
		}
		share.requireUntouched(t)
	})
}

// FuzzOps runs a program of FUSE operations decoded from the input, with
// names and symlink targets that try to leave the share. Afterwards nothing
// beside the share may exist or change, and forgetting every lookup the
// program took must empty the inode table.
func FuzzOps(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{3, 5, 1, 6, 2, 0, 7, 5, 3, 9, 1, 4})
	f.Add(bytes.Repeat([]byte{2, 7, 1, 9}, 10))
	names := []string{"a", "b", "d", "..", ".", "../ksg-marker-outside", "x/y", "", "link", "sub"}
	targets := []string{"/", "../ksg-marker-outside", "../../../../etc", "a", "d/../..", "loop"}
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 200 {
			return
		}
		share := newHostShare(t)
		fs := newFS(t, share.src, Options{Xattr: true, AnnounceSubmounts: true})
		defer fs.Close()
		lookups := map[uint64]uint64{}
		nodes := []uint64{rootID}
		next := func(i *int) byte {
			if *i >= len(prog) {
				return 0
			}
			b := prog[*i]
			*i++
			return b
		}
		took := func(e *fuse.EntryOut, st fuse.Status) {
			if st == fuse.OK && e.NodeId != 0 {
				lookups[e.NodeId]++
				nodes = append(nodes, e.NodeId)
			}
		}
		for i := 0; i < len(prog); {
			op := next(&i) % 12
			node := nodes[int(next(&i))%len(nodes)]
			name := names[int(next(&i))%len(names)]
			var eo fuse.EntryOut
			h := hdr(node)
			switch op {
			case 0:
				took(&eo, fs.Lookup(nil, &h, name, &eo))
			case 1:
				took(&eo, fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o755}, name, &eo))
			case 2:
				var co fuse.CreateOut
				st := fs.Create(nil, &fuse.CreateIn{InHeader: h, Flags: unix.O_RDWR, Mode: 0o644}, name, &co)
				took(&co.EntryOut, st)
				if st == fuse.OK {
					in := fuse.WriteIn{InHeader: hdr(co.NodeId), Fh: co.Fh, Size: 3}
					fs.Write(nil, &in, []byte("abc"))
					fs.Release(nil, &fuse.ReleaseIn{InHeader: hdr(co.NodeId), Fh: co.Fh})
				}
			case 3:
				took(&eo, fs.Symlink(nil, &h, targets[int(next(&i))%len(targets)], name, &eo))
			case 4:
				other := nodes[int(next(&i))%len(nodes)]
				took(&eo, fs.Link(nil, &fuse.LinkIn{InHeader: h, Oldnodeid: other}, name, &eo))
			case 5:
				rn := fuse.RenameIn{InHeader: h, Newdir: nodes[int(next(&i))%len(nodes)], Flags: uint32(next(&i) % 8)}
				rn.Opcode = 45
				fs.Rename(nil, &rn, name, names[int(next(&i))%len(names)])
			case 6:
				fs.Unlink(nil, &h, name)
			case 7:
				fs.Rmdir(nil, &h, name)
			case 8:
				in := fuse.SetAttrIn{}
				in.NodeId = node
				in.Valid = uint32(next(&i)) & (fuse.FATTR_MODE | fuse.FATTR_SIZE | fuse.FATTR_MTIME | fuse.FATTR_UID)
				in.Mode, in.Size, in.Mtime, in.Uid = 0o777, 7, 99, 1000
				var ao fuse.AttrOut
				fs.SetAttr(nil, &in, &ao)
			case 9:
				var oo fuse.OpenOut
				if fs.OpenDir(nil, &fuse.OpenIn{InHeader: h}, &oo) == fuse.OK {
					buf := make([]byte, 1024)
					l := fuse.NewDirEntryList(buf, 0)
					fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: h, Fh: oo.Fh, Size: 1024}, l)
					for _, e := range decodePlus(l.Bytes()) {
						took(&e, fuse.OK)
					}
					fs.ReleaseDir(&fuse.ReleaseIn{InHeader: h, Fh: oo.Fh})
				}
			case 10:
				if n := lookups[node]; n > 0 {
					fs.Forget(node, 1)
					lookups[node]--
				}
			case 11:
				var oo fuse.OpenOut
				if fs.Open(nil, &fuse.OpenIn{InHeader: h, Flags: uint32(next(&i)) << 8}, &oo) == fuse.OK {
					r, st := fs.Read(nil, &fuse.ReadIn{InHeader: h, Fh: oo.Fh, Size: 16}, nil)
					if st == fuse.OK {
						r.Bytes(make([]byte, 16))
						r.Done()
					}
					fs.Release(nil, &fuse.ReleaseIn{InHeader: h, Fh: oo.Fh})
				}
			}
		}
		share.requireUntouched(t)
		for node, n := range lookups {
			fs.Forget(node, n)
		}
		require.Equal(t, 1, fs.inodes.len(), "every lookup the program took was counted")
	})
}
