package installer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// NodeAPI is the little of the Kubernetes API we use: read a node's labels,
// and set or remove some of them (RBAC: nodes get and patch).
type NodeAPI interface {
	Labels(ctx context.Context, node string) (map[string]string, error)
	// PatchLabels sets each label to its value, or removes it when nil.
	PatchLabels(ctx context.Context, node string, labels map[string]*string) error
}

// KubeClient talks to the API server with a bearer token, re-read from
// TokenFile for every request (service account tokens are rotated).
type KubeClient struct {
	Base      string
	TokenFile string
	HTTP      *http.Client
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InClusterClient is the pod's service account client, as client-go's
// in-cluster configuration finds it.
func InClusterClient() (*KubeClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("not in a pod: KUBERNETES_SERVICE_HOST/PORT are unset")
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("service account CA %s: no certificate", filepath.Join(saDir, "ca.crt"))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &KubeClient{
		Base:      "https://" + net.JoinHostPort(host, port),
		TokenFile: filepath.Join(saDir, "token"),
		HTTP:      &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}, nil
}

func (c *KubeClient) do(ctx context.Context, method, node, ctype string, body []byte) ([]byte, error) {
	u := c.Base + "/api/v1/nodes/" + url.PathEscape(node)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if c.TokenFile != "" {
		tok, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("service account token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s node %s: %w", method, node, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("%s node %s: %w", method, node, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s node %s: %s: %s", method, node, resp.Status, strings.TrimSpace(string(data)))
	}
	return data, nil
}

func (c *KubeClient) Labels(ctx context.Context, node string) (map[string]string, error) {
	data, err := c.do(ctx, http.MethodGet, node, "", nil)
	if err != nil {
		return nil, err
	}
	var n struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	return n.Metadata.Labels, nil
}

func (c *KubeClient) PatchLabels(ctx context.Context, node string, labels map[string]*string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPatch, node, "application/merge-patch+json", body)
	return err
}

var labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// validLabelName says whether prefix+name is a valid label key (name part
// at most 63 characters).
func validLabelName(prefix, name string) bool {
	return len(name) <= 63 && labelName.MatchString(name) && strings.HasSuffix(prefix, "/")
}

// nodeLabels are the labels for the given shim reports.
func nodeLabels(reports []ShimReport) map[string]string {
	l := map[string]string{}
	for _, r := range reports {
		if !validLabelName(LabelPrefix, r.Shim+".protected") {
			continue // not a label Kubernetes accepts; status still reports it
		}
		l[LabelPrefix+r.Shim] = r.Verdict
		l[LabelPrefix+r.Shim+".protected"] = fmt.Sprint(r.Protected)
	}
	return l
}

// nfdContent is the NFD local feature file for labels: one name=value a line.
func nfdContent(labels map[string]string) []byte {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("# Written by kata-submount-guard-deploy: the FUSE submount fix status of each Kata shim's guest kernel.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, labels[k])
	}
	return b.Bytes()
}

// labelPatch turns current into want for our labels only: it sets what
// differs and removes ours that are no longer wanted.
func labelPatch(current, want map[string]string) map[string]*string {
	p := map[string]*string{}
	for k, v := range want {
		if cur, ok := current[k]; !ok || cur != v {
			p[k] = &v
		}
	}
	for k := range current {
		if _, ok := want[k]; !ok && strings.HasPrefix(k, LabelPrefix) {
			p[k] = nil
		}
	}
	return p
}
