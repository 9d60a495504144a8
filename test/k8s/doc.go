// Package k8s holds the tests that run kata-submount-guard under a real
// one-node Kubernetes (test/k8s/cluster): a pod with RuntimeClass kata
// reaches our shim and then Kata 4.1.0's real shim, and the installer's
// DaemonSet installs, labels and uninstalls on that node. They run only
// with KSG_INTEGRATION=1 as root (make test sets it) and need
// test/setup/80-kubernetes.sh, 70-kata.sh and the guest kernels.
package k8s
