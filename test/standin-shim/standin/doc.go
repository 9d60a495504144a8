// Package standin is the stand-in for Kata's containerd-shim-kata-v2 that the
// integration tests hand off to, because the real Kata shim needs a VM this
// machine cannot boot. It is containerd v1.7's runc shim (runtime/v2/shim and
// the runc task service) with two changes: Create accepts Kata's runtime
// options (runtimeoptions.v1.Options, which runc rejects) and records the
// configuration file Kata would have loaded, and start records the argv, env,
// working directory and stdin bytes it received, so tests can check that
// containerd-shim-kata-v2 handed off without changing any of them. Records are
// JSON files under $KSG_STANDIN_RECORD_DIR (nothing is recorded when unset).
// It follows containerd's shim v2 contract (runtime/v2/README.md, v1.7).
package standin
