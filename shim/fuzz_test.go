package shim

import (
	"strings"
	"testing"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
)

// FuzzParseArgs: any argv parses without panic, and a start is either
// checked, refused as unparsable, or not a start at all: never handed off
// unchecked.
func FuzzParseArgs(f *testing.F) {
	f.Add("-namespace\x00k8s.io\x00-address\x00/run/c.sock\x00-publish-binary\x00/usr/bin/containerd\x00-id\x00abc\x00start")
	f.Add("-namespace\x00ns\x00-id\x00abc\x00-bundle\x00/b\x00delete")
	f.Add("-v")
	f.Add("-new-flag\x00x\x00start")
	f.Fuzz(func(t *testing.T, joined string) {
		argv := append([]string{"containerd-shim-kata-v2"}, strings.Split(joined, "\x00")...)
		inv := parseArgs(argv)
		if inv.parseErr != nil {
			if inv.action != "" || inv.checks() {
				t.Fatal("an argv that does not parse has an action")
			}
			isStart := false
			for _, a := range argv[1:] {
				isStart = isStart || a == "start"
			}
			if isStart != inv.uncheckableStart(argv) {
				t.Fatalf("unparsable argv with start=%v not refused as such", isStart)
			}
			return
		}
		if inv.action == "start" && !inv.version && !inv.info && !inv.checks() {
			t.Fatal("a start handed off unchecked")
		}
	})
}

// FuzzParseAnnotations: config.json bytes never panic the parser, and what
// it returns classifies without panic.
func FuzzParseAnnotations(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"abc"}}`))
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"abc"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ann, err := parseAnnotations(data)
		if err != nil {
			if ann != nil {
				t.Fatal("annotations with an error")
			}
			return
		}
		_, _, _ = policy.Classify(ann, "id")
	})
}
