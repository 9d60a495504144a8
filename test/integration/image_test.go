package integration

import "github.com/kata-submount-guard/kata-submount-guard/test/testutil"

// testImage is the image every container and pod sandbox of the suite runs:
// /bin/busybox from busybox-static and its applet links. Its default command
// sleeps, so it also serves as CRI's sandbox ("pause") image without a
// registry.
const testImage = "docker.io/library/ksg-busybox:latest"

// writeBusyboxArchive writes an OCI image archive of testImage to path.
func writeBusyboxArchive(path string) error {
	return testutil.WriteBusyboxImage(path, testImage)
}
