package policy

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name    string
		ann     map[string]string
		typ     ContainerType
		sandbox string
		msg     string
	}{
		{"no annotations", nil, SingleContainer, "c1", ""},
		{"cri sandbox", map[string]string{"io.kubernetes.cri.container-type": "sandbox"}, PodSandbox, "c1", ""},
		{"cri container", map[string]string{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "sb9"}, PodContainer, "sb9", ""},
		{"crio sandbox", map[string]string{"io.kubernetes.cri-o.ContainerType": "sandbox"}, PodSandbox, "c1", ""},
		{"crio container", map[string]string{"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "sb8"}, PodContainer, "sb8", ""},
		{"docker podsandbox", map[string]string{"io.kubernetes.docker.type": "podsandbox"}, PodSandbox, "c1", ""},
		{"docker container", map[string]string{"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "sb7"}, PodContainer, "sb7", ""},
		{"values are shared across keys", map[string]string{"io.kubernetes.cri.container-type": "podsandbox"}, PodSandbox, "c1", ""},
		{"cri key first", map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri-o.ContainerType": "container"}, PodSandbox, "c1", ""},
		{"unknown type", map[string]string{"io.kubernetes.cri.container-type": "pod"}, "", "", `unknown container type "pod"`},
		{"container without sandbox id", map[string]string{"io.kubernetes.cri.container-type": "container"}, "", "", "no sandbox id annotation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			typ, sb, err := Classify(tc.ann, "c1")
			if tc.msg != "" {
				require.ErrorContains(t, err, tc.msg)
				require.True(t, errdefs.IsInvalidArgument(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.typ, typ)
			require.Equal(t, tc.sandbox, sb)
		})
	}
}
