package virtiofsd

import (
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

const (
	readmePath       = "../../docs/kata-virtiofsd.md"
	serveTableBegin  = "<!-- serve-options: generated from virtcontainers/virtiofsd/optiontable.go; to update: KSG_UPDATE_README=1 go test -run TestREADMEServeOptions ./virtcontainers/virtiofsd/ -->\n"
	serveTableEnd    = "<!-- end of serve-options -->\n"
	envUpdateREADME  = "KSG_UPDATE_README"
	serveTableHeader = "| Rust virtiofsd 1.13 option (and its `-o` form) | our daemon |\n| --- | --- |\n"
)

// readmeServeTable is README's table of what serve mode does with each option,
// from the option table.
func readmeServeTable() string {
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	var b strings.Builder
	b.WriteString(serveTableHeader)
	for _, op := range options {
		if op.serve == "" {
			continue
		}
		name := op.doc
		if name == "" {
			name = "--" + op.name
			if op.kind != noValue {
				name += "=" + strings.ToUpper(strings.ReplaceAll(op.name, "-", "_"))
			}
		}
		forms := []string{"`" + name + "`"}
		if op.compat != "" {
			forms = append(forms, "`-o "+op.compat+"=`")
		}
		if op.compatFlag != "" {
			forms = append(forms, "`-o "+op.compatFlag+"`", "`-o no_"+op.compatFlag+"`")
		}
		b.WriteString("| " + cell(strings.Join(forms, ", ")) + " | " + cell(op.serve) + " |\n")
	}
	noEffect := []string{"`" + shortNoEffect + "`"}
	for _, item := range compatNoEffect {
		noEffect = append(noEffect, "`-o "+item+"`")
	}
	b.WriteString("| " + strings.Join(noEffect, ", ") + " | honoured: no effect, as in Rust |\n")
	return b.String()
}

// README's serve-mode table is generated from the option table; a change
// to either without the other fails here.
func TestREADMEServeOptions(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	require.NoError(t, err)
	readme := string(b)
	begin := strings.Index(readme, serveTableBegin)
	end := strings.Index(readme, serveTableEnd)
	require.True(t, begin >= 0 && end > begin, "docs/kata-virtiofsd.md has no serve-options markers")
	got := readme[begin+len(serveTableBegin) : end]
	want := readmeServeTable()
	if got == want {
		return
	}
	if os.Getenv(envUpdateREADME) == "1" {
		readme = readme[:begin+len(serveTableBegin)] + want + readme[end:]
		require.NoError(t, os.WriteFile(readmePath, []byte(readme), 0o644))
		return
	}
	t.Fatalf("docs/kata-virtiofsd.md's serve-mode option table is out of date; run\n\t%s=1 go test -run %s ./virtcontainers/virtiofsd/\nwant:\n%s",
		envUpdateREADME, t.Name(), want)
}

// What README says serve mode does with each option is what CheckServe
// does: an "error" option is refused when used, a "honoured" one is not.
func TestServeDocMatchesRules(t *testing.T) {
	for _, op := range options {
		t.Run(op.name, func(t *testing.T) {
			refused := op.noServe != nil || op.rustOnly != nil
			switch {
			case op.serve == "":
				require.True(t, op.name == "help" || op.name == "version" || strings.HasPrefix(op.name, "guard-"),
					"every option our daemon may get has a README row")
				require.False(t, refused)
				return
			case refused:
				require.Contains(t, op.serve, "error")
			default:
				require.True(t, strings.HasPrefix(op.serve, "honoured"), "%q", op.serve)
			}
			if op.harmless != nil {
				require.Contains(t, op.serve, "harmless")
			}
			if op.kind != noValue {
				return // the rows of options with values say which values
			}
			o, err := Parse(kataArgv("--" + op.name))
			require.NoError(t, err)
			_, err = CheckServe(o)
			if refused {
				require.ErrorIs(t, err, errdefs.ErrNotImplemented)
				require.ErrorContains(t, err, "--"+op.name)
			} else {
				require.NoError(t, err)
			}
		})
	}
}

// Every -o form reaches the option it stands for, and the table names each
// long option and -o form once.
func TestOptionTableIndexes(t *testing.T) {
	seen := map[string]bool{}
	for _, op := range options {
		require.False(t, seen["--"+op.name], "--%s twice", op.name)
		seen["--"+op.name] = true
		require.NotNil(t, op.set, "--%s", op.name)
		if op.compat != "" {
			require.False(t, seen["-o "+op.compat], "-o %s twice", op.compat)
			seen["-o "+op.compat] = true
		}
		if op.compatFlag != "" {
			require.NotNil(t, op.setFlag, "-o %s", op.compatFlag)
			require.False(t, seen["-o "+op.compatFlag], "-o %s twice", op.compatFlag)
			seen["-o "+op.compatFlag] = true
		}
	}
	for _, item := range compatNoEffect {
		require.False(t, seen["-o "+item], "-o %s is both an option and without effect", item)
	}
}
