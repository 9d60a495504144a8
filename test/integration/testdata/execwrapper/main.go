// Command execwrapper is the smallest Go program that does what our shim
// does last: exec another program with its own argv and environment. The
// start benchmark runs it in front of the stand-in to show what any Go
// wrapper costs before it checks anything.
package main

import (
	"os"
	"syscall"
)

func main() {
	err := syscall.Exec(os.Getenv("KSG_EXEC_WRAPPER_TARGET"), os.Args, os.Environ())
	os.Stderr.WriteString("execwrapper: " + err.Error())
	os.Exit(1)
}
