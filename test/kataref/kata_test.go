package kataref

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/katabuild"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// kata is one archived Kata tag as test/setup/70-kata.sh built it.
type kata struct {
	tag  string
	dir  string // $KSG_CACHE/kata/<tag>
	shim string // its containerd-shim-kata-v2
	// defaults are the tag's default configuration paths, moved under
	// dir/root at build time: /etc first, then the share directory, as its
	// kata-runtime --show-default-config-paths prints them.
	defaults []string
}

var releaseTag = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// archivedTags lists the Go runtime tags in ../shared/upstream.
func archivedTags(t *testing.T) []string {
	dir := os.Getenv("KSG_UPSTREAM")
	if dir == "" {
		dir = filepath.Join(testutil.RepoRoot(t), "..", "shared", "upstream")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "kata-containers-*-runtime.tar.gz"))
	var tags []string
	for _, m := range matches {
		tags = append(tags, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "kata-containers-"), "-runtime.tar.gz"))
	}
	sort.Strings(tags)
	return tags
}

// requireKatas returns every archived tag's build; a missing one skips (and
// fails under CI).
func requireKatas(t *testing.T) []kata {
	t.Helper()
	testutil.RequiresEnv(t, "KSG_INTEGRATION")
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "unshare")
	tags := archivedTags(t)
	testutil.Require(t, len(tags) > 0, "no Kata archives in ../shared/upstream (or $KSG_UPSTREAM)")
	var out []kata
	for _, tag := range tags {
		dir := filepath.Join(testutil.CacheDir(), "kata", tag)
		k := kata{tag: tag, dir: dir, shim: filepath.Join(dir, "bin", "containerd-shim-kata-v2")}
		_, err := os.Stat(filepath.Join(dir, "ARCHIVE_SHA256"))
		testutil.Require(t, err == nil, "Kata "+tag+" is not built in "+dir+" (run test/setup/70-kata.sh)")
		// Kata's own word on its default paths.
		paths, err := exec.Command(filepath.Join(dir, "bin", "kata-runtime"), "--show-default-config-paths").Output()
		require.NoError(t, err, "kata-runtime %s --show-default-config-paths", tag)
		k.defaults = strings.Fields(string(paths))
		require.Len(t, k.defaults, 2, "Kata %s default paths: %q", tag, paths)
		for _, d := range k.defaults {
			require.True(t, strings.HasPrefix(d, filepath.Join(dir, "root")+"/"), "Kata %s was built with its defaults under %s/root, not at %s", tag, dir, d)
		}
		out = append(out, k)
	}
	return out
}

// oracle returns the oracle test binary built against k's tree
// (katabuild: once per fixture, archive and Go version).
func (k kata) oracle(t *testing.T) string {
	t.Helper()
	tree := katabuild.Tree{Tag: k.tag, Dir: k.dir}
	bin, err := tree.TestBinary(context.Background(), "pkg/containerd-shim-v2", filepath.Join("testdata", "ksg_oracle_test.go.in"))
	require.NoError(t, err, "build Kata %s's oracle", k.tag)
	return bin
}

// kataCase is one create request as Kata's shim sees it.
type kataCase struct {
	ConfigPath  string            `json:"config_path"`
	Annotations map[string]string `json:"annotations"`
	Env         string            `json:"-"` // KATA_CONF_FILE
}

// kataAnswer is what Kata's own code made of a kataCase.
type kataAnswer struct {
	File      string         `json:"file"`
	LoadError string         `json:"load_error"`
	SpecError string         `json:"spec_error"`
	Values    map[string]any `json:"values"`
}

func (a kataAnswer) err() string {
	if a.LoadError != "" {
		return a.LoadError
	}
	return a.SpecError
}

// ask runs Kata's oracle for c, with a /dev/log of the test's own (Kata's
// load fails without a syslog daemon) in a private /dev, where the oracle may
// put the /dev/vhost-vsock this machine lacks.
func (k kata) ask(t *testing.T, oracle string, c kataCase) kataAnswer {
	t.Helper()
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(oracle, "-test.run", "^TestKSGOracle$")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KSG_ORACLE_CASE=" + string(raw), "KSG_FAKE_VSOCK=1"}
	if c.Env != "" {
		cmd.Env = append(cmd.Env, "KATA_CONF_FILE="+c.Env)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	testutil.PrivateSyslog(t, cmd)
	require.NoError(t, cmd.Run(), "Kata %s oracle:\n%s\n%s", k.tag, stdout.String(), stderr.String())
	for _, line := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(line, "{") {
			var a kataAnswer
			require.NoError(t, json.Unmarshal([]byte(line), &a), line)
			return a
		}
	}
	t.Fatalf("Kata %s oracle gave no answer:\n%s\n%s", k.tag, stdout.String(), stderr.String())
	return kataAnswer{}
}

// is4 reports whether k is a Kata 4 Go runtime.
func (k kata) is4() bool { return strings.HasPrefix(k.tag, "4.") }

func (k kata) String() string { return fmt.Sprintf("Kata %s", k.tag) }
