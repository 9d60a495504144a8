package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/posix"
)

// posixCheckTimeout bounds one check under TCG; readdir_10k, the slowest,
// takes about a minute.
const posixCheckTimeout = 8 * time.Minute

// posixSuite is guest.ModePOSIX: every check of test/posix, each in its own
// run of the suite's test binary (a crash or hang in one cannot hide the
// others' results), against the share mounted at shareMount, one
// guest.POSIXResult line each.
func posixSuite(params map[string]string) {
	args := []string{"-dir", shareMount, "-mounted", "-xattr=" + fmt.Sprint(params[guest.KeyPOSIXXattr] == "1")}
	if m := params[guest.KeyPOSIXEscapeMarker]; m != "" {
		args = append(args, "-escape-marker", m)
	}
	for _, c := range posix.Checks() {
		fmt.Println(runPOSIXCheck(c.Name, args).Line())
	}
}

func runPOSIXCheck(name string, suiteArgs []string) guest.POSIXResult {
	args := append([]string{
		"-test.run", "^TestPOSIX$/^" + regexp.QuoteMeta(name) + "$",
		"-test.v", "-test.count=1", "-test.timeout=" + posixCheckTimeout.String(),
	}, suiteArgs...)
	cmd := exec.Command(guest.POSIXBinary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := guest.POSIXResult{Check: name, MS: int(time.Since(start).Milliseconds())}
	text := out.String()
	switch sub := "TestPOSIX/" + name + " ("; {
	case err == nil && strings.Contains(text, "--- PASS: "+sub):
		r.Outcome = guest.POSIXPass
	case err == nil && strings.Contains(text, "--- SKIP: "+sub):
		r.Outcome, r.Detail = guest.POSIXSkip, testMessages(text)
	default:
		r.Outcome, r.Detail = guest.POSIXFail, testMessages(text)
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			r.Detail = fmt.Sprintf("run %s: %v; %s", guest.POSIXBinary, err, r.Detail)
		} else if !strings.Contains(text, "--- FAIL: "+sub) {
			r.Detail = fmt.Sprintf("no result for the check (%v); %s", err, r.Detail)
		}
	}
	return r
}

// maxDetail keeps a failure's console line short; the end of the output
// (the failed assertion) is what matters.
const maxDetail = 1500

// testMessages is what the check logged: go test's output without its
// progress and summary lines.
func testMessages(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case t == "", t == "PASS", t == "FAIL", strings.HasPrefix(t, "=== "),
			strings.HasPrefix(t, "--- "), strings.HasPrefix(t, "exit status "):
			continue
		}
		keep = append(keep, strings.Join(strings.Fields(t), " "))
	}
	s := strings.Join(keep, " | ")
	if len(s) > maxDetail {
		s = "..." + s[len(s)-maxDetail:]
	}
	return s
}
