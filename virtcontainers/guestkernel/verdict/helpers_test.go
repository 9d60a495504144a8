package verdict

// Banners as kernels print them (the same as guestkernel's tests build into
// synthetic images).
const (
	bannerFixed61 = "Linux version 6.1.76 (ksg@build) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Mon Jan  1 00:00:00 UTC 2024"
	bannerVuln61  = "Linux version 6.1.69 (ksg@build) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Mon Jan  1 00:00:00 UTC 2024"
	bannerDebian  = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"
)
