// A test-only fixture of kata-submount-guard (test/katalaunch): it is copied
// into a copy of Kata Containers' src/runtime/virtcontainers (Go tags 3.0.2,
// 3.2.0, 4.1.0), never built in kata-submount-guard itself, and drives
// Kata's own unexported launch code: qemu.createVirtiofsDaemon (the argv
// inputs, and --xattr when disable_guest_selinux is false on 3.2+) and the
// virtiofsd type's Start and Stop (the listening socket passed as fd 3, the
// argv, the process, SIGKILL and socket removal). It must compile against
// every tag, so a field a tag lacks is set by reflection.

package virtcontainers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"testing"
)

func TestKSGLaunchVirtiofsd(t *testing.T) {
	daemon := os.Getenv("KSG_VIRTIO_FS_DAEMON")
	if daemon == "" {
		t.Skip("run by kata-submount-guard's test/katalaunch")
	}
	var extra []string
	if err := json.Unmarshal([]byte(os.Getenv("KSG_VIRTIO_FS_EXTRA_ARGS")), &extra); err != nil {
		t.Fatalf("KSG_VIRTIO_FS_EXTRA_ARGS: %v", err)
	}
	q := &qemu{id: os.Getenv("KSG_SANDBOX_ID")}
	q.config.VirtioFSDaemon = daemon
	q.config.VirtioFSCache = os.Getenv("KSG_VIRTIO_FS_CACHE")
	q.config.VirtioFSExtraArgs = extra
	q.config.VMStorePath = os.Getenv("KSG_VM_STORE_PATH")
	if f := reflect.ValueOf(&q.config).Elem().FieldByName("DisableGuestSeLinux"); f.IsValid() {
		f.SetBool(os.Getenv("KSG_DISABLE_GUEST_SELINUX") != "false")
	} else if os.Getenv("KSG_DISABLE_GUEST_SELINUX") == "false" {
		fmt.Println("KSG-ERROR this Kata has no disable_guest_selinux")
		t.FailNow()
	}

	vd, err := q.createVirtiofsDaemon(os.Getenv("KSG_SHARED_PATH"))
	if err != nil {
		fmt.Printf("KSG-ERROR createVirtiofsDaemon: %v\n", err)
		t.FailNow()
	}
	v, ok := vd.(*virtiofsd)
	if !ok {
		fmt.Printf("KSG-ERROR createVirtiofsDaemon returned %T\n", vd)
		t.FailNow()
	}
	quit := make(chan struct{})
	pid, err := v.Start(context.Background(), func() { close(quit) })
	if err != nil {
		fmt.Printf("KSG-ERROR Start: %v\n", err)
		t.FailNow()
	}
	fmt.Printf("KSG-STARTED pid=%d socket=%s\n", pid, v.socketPath)

	// Runs until the test driver closes stdin, as a sandbox until it is
	// stopped, or until the daemon quits.
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-quit:
		fmt.Println("KSG-QUIT")
	}
	if err := v.Stop(context.Background()); err != nil {
		fmt.Printf("KSG-ERROR Stop: %v\n", err)
		t.FailNow()
	}
	fmt.Println("KSG-STOPPED")
}
