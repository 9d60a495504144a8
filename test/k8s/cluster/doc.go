// Package cluster stands up a real one-node Kubernetes for tests: Debian's
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
// (built by test/setup/80-kubernetes.sh), a private containerd 1.6 with CRI
// and a CNI bridge, all inside a network and mount namespace of the test's
// own, so that the cluster touches nothing of the host: its ports, bridge and
// pod networks live in that network namespace; the tmpfs it puts over
// /var/lib/cni, /var/log/containers, /run/kata-containers and /run/vc, and
// the files it binds over the kernel tunables kubelet would otherwise change
// (vm.overcommit_memory, kernel.panic, ...), exist only in that mount
// namespace, which also has a /dev/log of the test's own (testutil.Syslog)
// for Kata's shim. On a containerd that drops CRI's runtime_path (1.6.20,
// Debian 12's), Options.RuntimePaths has ./runtimepath stand in for the fix.
//
// The test reaches the API with Kubectl (run inside the network namespace);
// the apiserver's address there is NodeIP:APIServerPort, also reachable from
// pods. Cleanup stops everything in order (kubelet, pods, containerd, control
// plane), kills whatever is left in the namespaces and removes every file,
// unless the test failed and KSG_KEEP is set.
package cluster
