package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	cases := []struct {
		name string
		old  []byte // nil: no file before
		data []byte
		perm os.FileMode
	}{
		{name: "new file", data: []byte("one"), perm: 0o600},
		{name: "replaces", old: []byte("old content"), data: []byte("new"), perm: 0o644},
		{name: "empty", old: []byte("x"), data: nil, perm: 0o600},
	}
	writers := map[string]func(string, []byte, os.FileMode) error{"Write": Write, "WriteDurable": WriteDurable}
	for _, tc := range cases {
		for wname, write := range writers {
			t.Run(wname+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "f.json")
				if tc.old != nil {
					require.NoError(t, os.WriteFile(path, tc.old, 0o666))
				}
				require.NoError(t, write(path, tc.data, tc.perm))
				got, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, string(tc.data), string(got))
				st, err := os.Stat(path)
				require.NoError(t, err)
				require.Equal(t, tc.perm, st.Mode().Perm())
				entries, err := os.ReadDir(dir)
				require.NoError(t, err)
				require.Len(t, entries, 1, "a temporary file was left behind")
			})
		}
	}
}

func TestWriteMissingDirectoryLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	require.Error(t, Write(filepath.Join(dir, "absent", "f"), []byte("x"), 0o600))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestWriteReadersSeeWholeFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	a, b := bytes.Repeat([]byte("a"), 1<<16), bytes.Repeat([]byte("b"), 1<<16)
	require.NoError(t, Write(path, a, 0o600))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			data := a
			if i%2 == 1 {
				data = b
			}
			if err := Write(path, data, 0o600); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 500; i++ {
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.True(t, bytes.Equal(got, a) || bytes.Equal(got, b), "read a torn file of %d bytes", len(got))
	}
	close(stop)
	wg.Wait()
}
