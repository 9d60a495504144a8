// Package oserr trims operating-system errors for messages that already
// name the file: "no such file or directory", not "stat /x: no such file
// or directory" after "/x".
package oserr
