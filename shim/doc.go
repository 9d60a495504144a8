// Package shim is the containerd face of containerd-shim-kata-v2. containerd
// runs the binary as a runtime v2 shim (`-namespace NS -address ADDR
// -publish-binary BIN -id ID [-debug] start|delete`, cwd = the bundle, runtime
// options on stdin, TTRPC_ADDRESS in the environment). For `start` of a pod
// sandbox or a single container it decodes the runtime options, resolves
// Kata's configuration, decides through hooks/policy whether the guest
// kernel may run, refuses with one actionable line, or warns (log + containerd event), writes the sandbox's plan, and then
// replaces itself with the upstream Kata shim (execve) with the same argv,
// environment, working directory and stdin bytes, so no process of ours stays
// in the data path. Every other invocation is handed off at once. The guest
// kernel is judged from the inspection cache; on a miss kata-runtime, installed
// beside the binary, inspects it and fills the cache, so that the image
// parsers are not linked into the shim. It follows containerd's runtime v2
// shim contract (runtime/v2/README.md, v1.7) and Kata's shim behaviour
// (src/runtime/pkg/containerd-shim-v2).
package shim
