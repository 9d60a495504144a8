// Package syslog sends log lines to the local syslog daemon in the form Go's
// log/syslog gives them ("<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG"), and tells
// whether one listens. It reaches the socket with net.DialUnix and raw
// sockets only: log/syslog dials through net.Dial, which links package net's
// name resolver into the binary, and kata-virtiofsd's binary is resident
// twice per sandbox (the waiting parent and the sandboxed daemon).
//
// Spec: log/syslog (its local form) and syslog(3) (datagram first, then
// stream).
package syslog
