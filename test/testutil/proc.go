package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Children returns the pids whose parent is pid, read from /proc/*/stat;
// processes that end while it reads are left out.
func Children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: the fields
		// after it start at the last ')'; the state, then the parent.
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}
