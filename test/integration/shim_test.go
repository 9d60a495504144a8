package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/shim"
	"github.com/kata-submount-guard/kata-submount-guard/test/standin-shim/standin"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// vulnerableRefusal is the line our shim prints when the policy refuses the
// vulnerable test kernel (6.1.69 with c4d361f66ac9 reverted, BTF built in).
func vulnerableRefusal(kernel, config string) string {
	return shim.ErrorPrefix + fmt.Sprintf("guest kernel %s (6.1.69) lacks the FUSE submount fix (Linux c4d361f66ac9; fixed in 6.7, 6.6.8, 6.1.70, 5.15.146) (evidence: btf); "+
		`on_vulnerable = refuse: sandbox creation refused. Boot a fixed kernel, or set [submount_guard] on_vulnerable = "warn" in %s`, kernel, config)
}

// TestCtrRefuseAndAllow: a vulnerable kernel under on_vulnerable = refuse
// fails `ctr run` with our line and leaves nothing; a fixed kernel runs, its
// plan exists while the container lives and is gone after it is deleted.
func TestCtrRefuseAndAllow(t *testing.T) {
	kernels := requireKernels(t)
	cfgDir := t.TempDir()
	cfgPath := filepath.Join(cfgDir, "configuration.toml")
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})

	t.Run("vulnerable refused", func(t *testing.T) {
		_, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.vulnerable, onVulnerable: "refuse"})
		out, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "refused", "echo", "must not run")
		require.Error(t, err)
		require.Empty(t, out)
		require.Equal(t, ctrStartFailure(vulnerableRefusal(kernels.vulnerable, cfgPath)), stderr)
		c.requireNothingLeft(t, ctrNamespace, "refused", stateDir)
	})

	t.Run("fixed runs", func(t *testing.T) {
		_, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"})
		_, stderr, err := c.ctr(ctrNamespace, "run", "--detach", "--runtime", kataRuntime, testImage, "allowed", "sh", "-c", "echo started; sleep 1000")
		require.NoError(t, err, stderr)
		p, err := plan.Read(stateDir, "allowed")
		require.NoError(t, err)
		require.Equal(t, plan.Allow, p.Action)
		require.Equal(t, verdict.Fixed, p.Kernel.Verdict)
		require.Equal(t, kernels.fixed, p.Kernel.Path)
		require.Equal(t, cfgPath, p.ConfigPath)
		require.Equal(t, "env", p.ConfigSource)

		out, stderr, err := c.ctr(ctrNamespace, "tasks", "exec", "--exec-id", "e1", "allowed", "echo", "hello from the fixed kernel's sandbox")
		require.NoError(t, err, stderr)
		require.Equal(t, "hello from the fixed kernel's sandbox\n", out)

		_, stderr, err = c.ctr(ctrNamespace, "tasks", "kill", "--signal", "SIGKILL", "allowed")
		require.NoError(t, err, stderr)
		eventually(t, func() bool {
			out, _, _ := c.ctr(ctrNamespace, "tasks", "list")
			return !strings.Contains(out, "RUNNING")
		}, "task did not stop")
		_, stderr, err = c.ctr(ctrNamespace, "tasks", "delete", "allowed")
		require.NoError(t, err, stderr)
		_, stderr, err = c.ctr(ctrNamespace, "containers", "delete", "allowed")
		require.NoError(t, err, stderr)
		eventually(t, func() bool { _, err := plan.Read(stateDir, "allowed"); return err != nil }, "plan not removed after delete")
	})

	t.Run("fixed prints", func(t *testing.T) {
		writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"})
		out, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "prints", "echo", "hello from busybox")
		require.NoError(t, err, stderr)
		require.Equal(t, "hello from busybox\n", out)
	})
}

// TestCRIRefuseAndAllow: the same through CRI: RunPodSandbox fails with our
// line and leaves nothing; a fixed kernel's pod runs a container.
func TestCRIRefuseAndAllow(t *testing.T) {
	kernels := requireKernels(t)
	cfgDir := t.TempDir()
	cfgPath := filepath.Join(cfgDir, "configuration.toml")
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)

	t.Run("vulnerable refused", func(t *testing.T) {
		_, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.vulnerable, onVulnerable: "refuse"})
		id, stderr, err := c.runPod(t, "kata", pod{name: "refused"})
		require.Error(t, err)
		require.Empty(t, id)
		require.Equal(t, criStartFailure(vulnerableRefusal(kernels.vulnerable, cfgPath)), crictlFatal(t, stderr))
		pods, _, err := c.crictl("pods", "--quiet")
		require.NoError(t, err)
		require.Empty(t, pods)
		refused := c.refusedSandboxIDs()
		require.Len(t, refused, 1)
		c.requireNothingLeft(t, criNamespace, refused[0], stateDir)
	})

	t.Run("fixed runs", func(t *testing.T) {
		_, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"})
		p := pod{name: "allowed"}
		podID, pl := c.runKataPod(t, p, stateDir)
		require.Equal(t, plan.Allow, pl.Action)
		cid := c.startContainer(t, podID, p, "app", "sh", "-c", "echo hello from busybox; sleep 1000")
		out, stderr, err := c.crictl("exec", cid, "echo", "exec works")
		require.NoError(t, err, stderr)
		require.Equal(t, "exec works", out)
		eventually(t, func() bool {
			logs, _, _ := c.crictl("logs", cid)
			return logs == "hello from busybox"
		}, "container did not print")
		c.removePod(t, podID)
		eventually(t, func() bool { _, err := plan.Read(stateDir, podID); return err != nil }, "plan not removed after rmp")
	})
}

// TestWarn: on_vulnerable = warn starts the sandbox, publishes a containerd
// event that `ctr events` shows, and logs Kata's fields into containerd's log
// (through the bundle's log FIFO).
func TestWarn(t *testing.T) {
	kernels := requireKernels(t)
	cfgDir := t.TempDir()
	cfgPath, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.vulnerable, onVulnerable: "warn"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)
	ev := c.watchEvents(t)

	check := func(t *testing.T, ns, id string) {
		eventually(t, func() bool {
			for _, line := range strings.Split(ev.String(), "\n") {
				if strings.Contains(line, " "+ns+" "+shim.WarnTopic+" ") && strings.Contains(line, id) {
					return true
				}
			}
			return false
		}, "no %s event for %s in ctr events:\n%s", shim.WarnTopic, id, ev)
		var event string
		for _, line := range strings.Split(ev.String(), "\n") {
			if strings.Contains(line, shim.WarnTopic) && strings.Contains(line, id) {
				event = line
			}
		}
		for _, want := range []string{kernels.vulnerable, "6.1.69", "vulnerable", "warn", "lacks the FUSE submount fix"} {
			require.Contains(t, event, want)
		}

		var logLine string
		for _, line := range strings.Split(c.log(), "\n") {
			if strings.Contains(line, "level=warning") && strings.Contains(line, "sandbox="+id+" ") {
				logLine = line
			}
		}
		require.NotEmpty(t, logLine, "no warning for %s in containerd's log", id)
		for _, want := range []string{"source=containerd-kata-shim-v2", "name=containerd-shim-v2", "verdict=vulnerable", "kernel=" + kernels.vulnerable} {
			require.Contains(t, logLine, want)
		}
	}

	t.Run("ctr", func(t *testing.T) {
		out, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "warned", "echo", "runs despite the warning")
		require.NoError(t, err, stderr)
		require.Equal(t, "runs despite the warning\n", out)
		check(t, ctrNamespace, "warned")
	})

	t.Run("cri", func(t *testing.T) {
		podID, pl := c.runKataPod(t, pod{name: "warned"}, stateDir)
		require.Equal(t, plan.Warn, pl.Action)
		require.Equal(t, verdict.Vulnerable, pl.Kernel.Verdict)
		check(t, criNamespace, podID)
		c.removePod(t, podID)
	})
}

// TestConfigSources: the configuration file is chosen as Kata chooses it.
// In each case only the file of the source that must win allows the
// sandbox; every other source names a file that refuses it.
func TestConfigSources(t *testing.T) {
	kernels := requireKernels(t)
	type sources struct{ env, ctrOption, criOption, annotation bool }
	for _, tc := range []struct {
		name    string
		present sources
		winner  string // the source that must win
		cri     bool
	}{
		{name: "KATA_CONF_FILE", present: sources{env: true}, winner: "env"},
		{name: "ctr runtime-config-path over KATA_CONF_FILE", present: sources{env: true, ctrOption: true}, winner: "ctrOption"},
		{name: "CRI ConfigPath over KATA_CONF_FILE", present: sources{env: true, criOption: true}, winner: "criOption", cri: true},
		{name: "pod annotation over CRI ConfigPath", present: sources{env: true, criOption: true, annotation: true}, winner: "annotation", cri: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths := map[string]string{}
			var winnerState string
			for _, src := range []string{"env", "ctrOption", "criOption", "annotation"} {
				cfg := kataConfig{kernel: kernels.vulnerable, onVulnerable: "refuse"}
				if src == tc.winner {
					cfg = kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"}
				}
				p, state := writeKataConfig(t, filepath.Join(dir, src), cfg)
				paths[src] = p
				if src == tc.winner {
					winnerState = state
				}
			}
			opts := containerdOptions{}
			if tc.present.env {
				opts.env = []string{"KATA_CONF_FILE=" + paths["env"]}
			}
			if tc.present.criOption {
				opts.criConfigPath = paths["criOption"]
			}
			c := startContainerd(t, opts)
			wantSource := map[string]string{"env": "env", "ctrOption": "runtime-options", "criOption": "runtime-options", "annotation": "annotation"}[tc.winner]

			var id string
			if tc.cri {
				c.useCRI(t)
				p := pod{name: "src"}
				if tc.present.annotation {
					p.annotations = map[string]string{"io.katacontainers.config_path": paths["annotation"]}
				}
				podID, stderr, err := c.runPod(t, "kata", p)
				require.NoError(t, err, stderr)
				id = podID
			} else {
				args := []string{"run", "--detach", "--runtime", kataRuntime}
				if tc.present.ctrOption {
					args = append(args, "--runtime-config-path", paths["ctrOption"])
				}
				_, stderr, err := c.ctr(ctrNamespace, append(args, testImage, "src", "sleep", "1000")...)
				require.NoError(t, err, stderr)
				id = "src"
			}
			pl, err := plan.Read(winnerState, id)
			require.NoError(t, err)
			require.Equal(t, paths[tc.winner], pl.ConfigPath)
			require.Equal(t, wantSource, pl.ConfigSource)
			if usingStandin() {
				// The file Kata itself would have loaded at Create.
				rec, err := standin.ReadCreateRecord(c.recordDir, id)
				require.NoError(t, err)
				require.Equal(t, paths[tc.winner], rec.ConfigPath)
				require.Equal(t, wantSource, rec.ConfigSource)
			}
		})
	}
}

// TestKernelAnnotation: a pod annotation overrides the kernel only where
// enable_annotations allows it, as in Kata.
func TestKernelAnnotation(t *testing.T) {
	kernels := requireKernels(t)
	const kernelAnnotation = "io.katacontainers.config.hypervisor.kernel"
	for _, tc := range []struct {
		name       string
		configured string
		annotated  string
		enable     []string
		wantLine   func(cfgPath string) string // "" = runs
	}{
		{name: "allowed, to a vulnerable kernel", configured: kernels.fixed, annotated: kernels.vulnerable, enable: []string{"kernel"},
			wantLine: func(cfg string) string { return vulnerableRefusal(kernels.vulnerable, cfg) }},
		{name: "allowed, to a fixed kernel", configured: kernels.vulnerable, annotated: kernels.fixed, enable: []string{"kernel"}},
		{name: "disallowed", configured: kernels.vulnerable, annotated: kernels.fixed, enable: nil,
			wantLine: func(cfg string) string {
				return shim.ErrorPrefix + fmt.Sprintf(`annotation %s is not enabled: its name after "io.katacontainers.config.hypervisor." must match a regular expression in [hypervisor.qemu] enable_annotations [] of %s (Kata refuses the sandbox too): invalid argument`,
					kernelAnnotation, filepath.Join(filepath.Dir(cfg), "config.d", "50-test.toml"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgPath, stateDir := writeKataConfig(t, t.TempDir(), kataConfig{kernel: tc.configured, onVulnerable: "refuse", onUnknown: "refuse", enableAnnotations: tc.enable})
			c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
			c.useCRI(t)
			podID, stderr, err := c.runPod(t, "kata", pod{name: "annotated", annotations: map[string]string{kernelAnnotation: tc.annotated}})
			if tc.wantLine == nil {
				require.NoError(t, err, stderr)
				pl, err := plan.Read(stateDir, podID)
				require.NoError(t, err)
				require.Equal(t, tc.annotated, pl.Kernel.Path)
				require.Equal(t, plan.Allow, pl.Action)
				return
			}
			require.Error(t, err)
			require.Equal(t, criStartFailure(tc.wantLine(cfgPath)), crictlFatal(t, stderr))
			require.Empty(t, plans(t, stateDir))
		})
	}
}

// TestPodContainers: in a pod only the sandbox's start is checked; the
// containers that join it are handed off at once even when the policy would
// now refuse, and the sandbox's plan goes away with the pod.
func TestPodContainers(t *testing.T) {
	kernels := requireKernels(t)
	cfgDir := t.TempDir()
	cfgPath, stateDir := writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)

	p := pod{name: "several"}
	podID, stderr, err := c.runPod(t, "kata", p)
	require.NoError(t, err, stderr)
	require.Len(t, plans(t, stateDir), 1)

	// From now on a sandbox start would be refused.
	writeKataConfig(t, cfgDir, kataConfig{kernel: kernels.vulnerable, onVulnerable: "refuse"})
	var ids []string
	for _, name := range []string{"one", "two", "three"} {
		id := c.startContainer(t, podID, p, name, "sh", "-c", "echo "+name+"; sleep 1000")
		out, stderr, err := c.crictl("exec", id, "echo", name+" answers")
		require.NoError(t, err, stderr)
		require.Equal(t, name+" answers", out)
		ids = append(ids, id)
	}
	require.Len(t, plans(t, stateDir), 1, "a joining container got a plan")
	require.Empty(t, c.refusedSandboxIDs())
	if usingStandin() {
		for _, id := range ids {
			_, err := standin.ReadStartRecord(c.recordDir, id)
			require.NoError(t, err, "container %s was not handed off", id)
		}
	}
	c.removePod(t, podID)
	eventually(t, func() bool { return len(plans(t, stateDir)) == 0 }, "plan not removed after rmp")
}

// TestParallelSandboxes: 20 pods started at once, half with a fixed and half
// with a vulnerable kernel (pod annotation): each gets its own right answer.
func TestParallelSandboxes(t *testing.T) {
	kernels := requireKernels(t)
	const n = 20
	cfgPath, stateDir := writeKataConfig(t, t.TempDir(), kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse", enableAnnotations: []string{"kernel"}})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)

	type result struct {
		id, stderr string
		err        error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		kernel := kernels.fixed
		if i%2 == 1 {
			kernel = kernels.vulnerable
		}
		p := pod{name: fmt.Sprintf("par-%02d", i), annotations: map[string]string{"io.katacontainers.config.hypervisor.kernel": kernel}}
		cfg := c.podConfig(t, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, stderr, err := c.crictl("runp", "--runtime", "kata", cfg)
			results[i] = result{id, stderr, err}
		}()
	}
	wg.Wait()

	started := map[string]bool{}
	for i, r := range results {
		if i%2 == 0 {
			require.NoError(t, r.err, "pod %d: %s", i, r.stderr)
			started[r.id] = true
			continue
		}
		require.Error(t, r.err, "pod %d with the vulnerable kernel ran", i)
		require.Equal(t, criStartFailure(vulnerableRefusal(kernels.vulnerable, cfgPath)), crictlFatal(t, r.stderr))
	}
	require.Len(t, started, n/2)
	got := plans(t, stateDir)
	require.Len(t, got, n/2)
	for id, p := range got {
		require.True(t, started[id], "plan for a pod that did not start: %s", id)
		require.Equal(t, kernels.fixed, p.Kernel.Path)
		require.Equal(t, plan.Allow, p.Action)
	}
	refused := c.refusedSandboxIDs()
	require.Len(t, refused, n/2)
	for _, id := range refused {
		c.requireNothingLeft(t, criNamespace, id, stateDir)
	}
	for id := range started {
		c.removePod(t, id)
	}
	eventually(t, func() bool { return len(plans(t, stateDir)) == 0 }, "plans not removed after rmp")
}

// TestStartErrors: a start that cannot check or cannot hand off says what to
// fix in one line and leaves nothing behind.
func TestStartErrors(t *testing.T) {
	kernels := requireKernels(t)
	dir := t.TempDir()
	notExecutable := filepath.Join(dir, "not-executable")
	require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644))
	aFile := filepath.Join(dir, "a-file")
	require.NoError(t, os.WriteFile(aFile, nil, 0o644))
	cfgPath := filepath.Join(dir, "configuration.toml")
	for _, tc := range []struct {
		name     string
		cfg      *kataConfig       // nil: no file at cfgPath
		edit     func(path string) // changes the written file
		wantLine string
	}{
		{name: "delegate missing", cfg: &kataConfig{delegate: "/nonexistent/containerd-shim-kata-v2"},
			wantLine: fmt.Sprintf(`delegate shim /nonexistent/containerd-shim-kata-v2 ([submount_guard] delegate_shim = "/nonexistent/containerd-shim-kata-v2" in %s) cannot be used: no such file or directory; install Kata's upstream containerd-shim-kata-v2 there or point delegate_shim at it: not found`, cfgPath)},
		{name: "delegate not executable", cfg: &kataConfig{delegate: notExecutable},
			wantLine: fmt.Sprintf(`delegate shim %s ([submount_guard] delegate_shim = %q in %s) is not executable (mode -rw-r--r--); chmod +x it or point delegate_shim at Kata's upstream containerd-shim-kata-v2: failed precondition`, notExecutable, notExecutable, cfgPath)},
		{name: "delegate is this shim", cfg: &kataConfig{delegate: suite.bins.ours},
			wantLine: fmt.Sprintf(`delegate shim %s ([submount_guard] delegate_shim = %q in %s) is this guard shim itself; point delegate_shim at Kata's upstream containerd-shim-kata-v2: invalid argument`, suite.bins.ours, suite.bins.ours, cfgPath)},
		{name: "state dir unwritable", cfg: &kataConfig{stateDir: filepath.Join(aFile, "state")},
			wantLine: fmt.Sprintf(`cannot store the plan of sandbox failing in [submount_guard] state_dir = %q (%s): write plan: mkdir %s: not a directory; make that directory writable by root or set state_dir to one that is`, filepath.Join(aFile, "state"), cfgPath, aFile)},
		{name: "config missing",
			wantLine: fmt.Sprintf(`configuration file from environment variable KATA_CONF_FILE: file %s does not exist: not found`, cfgPath)},
		{name: "config malformed", cfg: &kataConfig{}, edit: func(p string) {
			require.NoError(t, os.WriteFile(p, []byte("[hypervisor.qemu]\nkernel = = 1\n"), 0o644))
		},
			wantLine: fmt.Sprintf(`%s:2:10: invalid TOML: expected value but found '=' instead (last key "hypervisor.qemu.kernel")`, cfgPath)},
		{name: "config unreadable", cfg: &kataConfig{}, edit: func(p string) { require.NoError(t, os.Remove(p)); require.NoError(t, os.Mkdir(p, 0o755)) },
			wantLine: fmt.Sprintf(`%s is a directory, not a TOML file: invalid argument`, cfgPath)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.RemoveAll(cfgPath)
			_ = os.RemoveAll(filepath.Join(dir, "config.d"))
			stateDir := filepath.Join(dir, "state")
			if tc.cfg != nil {
				cfg := *tc.cfg
				cfg.kernel = kernels.fixed
				_, stateDir = writeKataConfig(t, dir, cfg)
				if tc.edit != nil {
					tc.edit(cfgPath)
				}
			}
			c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
			_, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "failing", "echo", "must not run")
			require.Error(t, err)
			require.Equal(t, ctrStartFailure(shim.ErrorPrefix+tc.wantLine), stderr)
			c.requireNothingLeft(t, ctrNamespace, "failing", stateDir)
		})
	}
}

// TestHandOffUnchanged: the delegate receives exactly what containerd gave
// our shim. The same container started through the stand-in alone is the
// reference; ids and the shim's own path are the only differences. No
// process of ours is left once the sandbox runs.
func TestHandOffUnchanged(t *testing.T) {
	requireStandin(t)
	kernels := requireKernels(t)
	cfgPath, _ := writeKataConfig(t, t.TempDir(), kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})

	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "without runtime options"},
		{name: "with runtime options on stdin", args: []string{"--runtime-config-path", cfgPath}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids := map[string]string{standinRuntime: "ref", kataRuntime: "ours"}
			for runtime, id := range ids {
				args := append([]string{"run", "--detach", "--runtime", runtime}, tc.args...)
				_, stderr, err := c.ctr(ctrNamespace, append(args, testImage, id, "sleep", "1000")...)
				require.NoError(t, err, stderr)
			}
			require.Empty(t, ourProcesses(t), "a process of our shim is still running")
			ref, err := standin.ReadStartRecord(c.recordDir, "ref")
			require.NoError(t, err)
			ours, err := standin.ReadStartRecord(c.recordDir, "ours")
			require.NoError(t, err)

			wantArgv := append([]string{suite.bins.ours}, ref.Argv[1:]...)
			for i, a := range wantArgv {
				if a == "ref" {
					wantArgv[i] = "ours"
				}
			}
			require.Equal(t, wantArgv, ours.Argv)
			require.Equal(t, ref.Env, ours.Env)
			require.Equal(t, filepath.Join(filepath.Dir(ref.Cwd), "ours"), ours.Cwd)
			require.Equal(t, ref.Stdin, ours.Stdin)
			require.Equal(t, ref.SigBlk, ours.SigBlk, "blocked signals")
			require.Equal(t, ref.SigIgn, ours.SigIgn, "ignored signals")
			if tc.args != nil {
				require.NotEmpty(t, ours.Stdin)
				require.Equal(t, cfgPath, ours.StdinConfigPath)
			} else {
				require.Empty(t, ours.Stdin)
			}

			for _, id := range ids {
				_, _, _ = c.ctr(ctrNamespace, "tasks", "kill", "--signal", "SIGKILL", id)
			}
			for _, id := range ids {
				eventually(t, func() bool {
					_, _, err := c.ctr(ctrNamespace, "tasks", "delete", id)
					return err == nil
				}, "task %s not deleted", id)
				_, stderr, err := c.ctr(ctrNamespace, "containers", "delete", id)
				require.NoError(t, err, stderr)
			}
			// delete is handed off with containerd's argv too.
			eventually(t, func() bool {
				_, err1 := standin.ReadDeleteRecord(c.recordDir, "ref")
				_, err2 := standin.ReadDeleteRecord(c.recordDir, "ours")
				return err1 == nil && err2 == nil
			}, "delete not run")
			refDel, err := standin.ReadDeleteRecord(c.recordDir, "ref")
			require.NoError(t, err)
			oursDel, err := standin.ReadDeleteRecord(c.recordDir, "ours")
			require.NoError(t, err)
			wantArgv = append([]string{suite.bins.ours}, refDel.Argv[1:]...)
			for i, a := range wantArgv {
				wantArgv[i] = strings.ReplaceAll(a, "ref", "ours")
			}
			require.Equal(t, wantArgv, oursDel.Argv)
			for _, id := range ids {
				for _, p := range []string{standin.StartRecordPath(c.recordDir, id), standin.CreateRecordPath(c.recordDir, id), standin.DeleteRecordPath(c.recordDir, id)} {
					require.NoError(t, os.Remove(p))
				}
			}
		})
	}
}

// TestHandOffAtOnce: -v, -info, unknown flags and -h are the delegate's
// answer, output and exit code alike, with our argv[0] (the stand-in names
// itself after it). Run without containerd, as a person would.
func TestHandOffAtOnce(t *testing.T) {
	requireIntegration(t)
	requireStandin(t)
	kernels := requireKernels(t)
	cfgPath, _ := writeKataConfig(t, t.TempDir(), kataConfig{kernel: kernels.fixed})
	for _, args := range [][]string{{"-v"}, {"-info"}, {"--version"}, {"-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			run := func(bin string) (string, int) {
				cmd := exec.Command(bin, args...)
				cmd.Args[0] = suite.bins.ours
				cmd.Dir = t.TempDir()
				cmd.Env = append(os.Environ(), "KATA_CONF_FILE="+cfgPath)
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else {
					require.NoError(t, err)
				}
				return string(out), code
			}
			got, gotCode := run(suite.bins.ours)
			want, wantCode := run(suite.bins.standin)
			require.Equal(t, want, got)
			require.Equal(t, wantCode, gotCode)
			require.Contains(t, got, "containerd-shim-kata-v2")
		})
	}
}

// TestKernelInspectorMissing: our shim installed without our kata-runtime
// beside it cannot inspect a kernel its cache does not know. That is an
// installation error: the start fails with one line saying what is missing,
// where it was looked for and what to install, and leaves nothing behind,
// whatever on_unknown says (the default warn here, which an unknown verdict
// would have let through). The same holds for Kata's own kata-runtime in its
// place (a stand-in that fails as it does, having no guest-kernel command).
// With our kata-runtime beside it the same start runs, and later starts find
// the kernel in the cache.
func TestKernelInspectorMissing(t *testing.T) {
	kernels := requireKernels(t)
	dir := t.TempDir()
	alone := &binaries{dir: filepath.Join(dir, "bin")}
	alone.ours = filepath.Join(alone.dir, filepath.Base(suite.bins.ours))
	alone.standin = filepath.Join(alone.dir, filepath.Base(suite.bins.standin))
	require.NoError(t, os.MkdirAll(alone.dir, 0o755))
	for _, p := range [][2]string{{suite.bins.ours, alone.ours}, {suite.bins.standin, alone.standin}} {
		copyFile(t, p[0], p[1])
	}
	cfgPath, stateDir := writeKataConfig(t, dir, kataConfig{kernel: kernels.fixed, onVulnerable: "refuse"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}, bins: alone})
	inspector := filepath.Join(alone.dir, "kata-runtime")
	failure := func(problem string) string {
		return fmt.Sprintf("guest kernel %s cannot be checked: it is not in the inspection cache %s and the inspector %s "+
			"(looked for beside the shim's executable %s) %s; install kata-submount-guard's kata-runtime, from the same build as "+
			"containerd-shim-kata-v2, as %s: failed precondition",
			kernels.fixed, statedir.KernelCacheDir(stateDir), inspector, alone.ours, problem, inspector)
	}

	_, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "uninspected", "echo", "must not run")
	require.Error(t, err)
	require.Equal(t, ctrStartFailure(shim.ErrorPrefix+failure("does not exist")), stderr)
	c.requireNothingLeft(t, ctrNamespace, "uninspected", stateDir)

	require.NoError(t, os.WriteFile(inspector, []byte("#!/bin/sh\necho \"No help topic for '$1'\" >&2\nexit 3\n"), 0o755))
	_, stderr, err = c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, "kata-inspector", "echo", "must not run")
	require.Error(t, err)
	require.Equal(t, ctrStartFailure(shim.ErrorPrefix+failure("is not kata-submount-guard's kata-runtime or failed (exit status 3: No help topic for 'guest-kernel')")), stderr)
	c.requireNothingLeft(t, ctrNamespace, "kata-inspector", stateDir)

	copyFile(t, filepath.Join(suite.bins.dir, "kata-runtime"), inspector)
	run := func(id string) {
		out, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", kataRuntime, testImage, id, "echo", "runs")
		require.NoError(t, err, stderr)
		require.Equal(t, "runs\n", out)
	}
	run("inspected")
	entries, err := os.ReadDir(statedir.KernelCacheDir(stateDir))
	require.NoError(t, err)
	require.Len(t, entries, 1, "kata-runtime cached the kernel's facts")
	// A cached kernel needs no inspector.
	require.NoError(t, os.Remove(inspector))
	run("cached")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o755))
}
