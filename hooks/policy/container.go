package policy

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// ContainerType says how a container relates to a sandbox (Kata's
// vc.ContainerType, from the same annotations).
type ContainerType string

const (
	// PodSandbox is a pod's sandbox (pause) container: it creates the VM.
	PodSandbox ContainerType = "pod_sandbox"
	// PodContainer joins the sandbox of its pod.
	PodContainer ContainerType = "pod_container"
	// SingleContainer has no pod: it is its own sandbox.
	SingleContainer ContainerType = "single_container"
)

// Annotations that classify a container, checked in this order as Kata does
// (containerd CRI, CRI-O, dockershim).
var (
	containerTypeKeys = []string{"io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType", "io.kubernetes.docker.type"}
	sandboxIDKeys     = []string{"io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID", "io.kubernetes.sandbox.id"}
	sandboxValues     = []string{"sandbox", "podsandbox"}
	containerValues   = []string{"container"}
)

// Classify returns a container's type and the id of its sandbox, from its
// config.json annotations, as Kata's oci.ContainerType and oci.SandboxID do:
// the first type annotation present decides, "sandbox"/"podsandbox" create a
// sandbox whose id is the container's, "container" joins the sandbox its
// sandbox-id annotation names, no annotation is a single container.
func Classify(annotations map[string]string, containerID string) (ContainerType, string, error) {
	for _, key := range containerTypeKeys {
		v, ok := annotations[key]
		if !ok {
			continue
		}
		switch {
		case contains(sandboxValues, v):
			return PodSandbox, containerID, nil
		case contains(containerValues, v):
			for _, k := range sandboxIDKeys {
				if id, ok := annotations[k]; ok {
					return PodContainer, id, nil
				}
			}
			return "", "", fmt.Errorf("container %s: annotation %s=%q but no sandbox id annotation (%v): %w", containerID, key, v, sandboxIDKeys, errdefs.ErrInvalidArgument)
		default:
			return "", "", fmt.Errorf("container %s: unknown container type %q in annotation %s: %w", containerID, v, key, errdefs.ErrInvalidArgument)
		}
	}
	return SingleContainer, containerID, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
