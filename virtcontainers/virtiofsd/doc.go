// Package virtiofsd models a virtiofsd command line and hands it on to an
// upstream daemon: it parses exactly what each Kata launcher passes (Go
// runtime 3.2+/4.x `--syslog --cache=MODE --shared-dir=DIR --fd=3`, Go 2.x/3.0.x
// `--syslog -o cache=MODE -o no_posix_lock -o source=DIR --fd=3 -f`, runtime-rs
// `--socket-path SOCK --shared-dir .../<id>/ro --cache MODE`, each followed by
// virtio_fs_extra_args) and everything else Rust virtiofsd 1.13 accepts, with
// Rust's defaults and precedence; it creates runtime-rs's socket itself and
// hands it on as an inherited fd (Listen), so that the ready line runtime-rs
// waits for (ReadyLine) can be printed whatever daemon serves; it detects whether an upstream binary is the Rust virtiofsd or
// QEMU's C virtiofsd (from its --version and --help output, cached per binary);
// it translates the command line for that flavour with a submount protection
// applied, refusing flags the target cannot honour; it checks the same for
// kata-virtiofsd's own daemon (CheckServe); and it execs the upstream with the
// inherited vhost-user listening socket kept at its fd number.
//
// The flag sets follow the daemons themselves: Rust virtiofsd 1.13.2
// (`virtiofsd --help`, clap; `-o` compat options applied after all flags) and
// QEMU 7.2's tools/virtiofsd (`-o` fuse_opt options, helper.c flags). Each
// long option is one entry of one table (optiontable.go) that drives parsing,
// the C translation, CheckServe and README's serve-mode table.
package virtiofsd
