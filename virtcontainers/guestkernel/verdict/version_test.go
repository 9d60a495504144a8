package verdict

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    string // upstreamVersion.String()
		abi, ok bool
	}{
		{release: "6.1.76", want: "6.1.76", ok: true},
		{release: "6.7.0", want: "6.7.0", ok: true},
		{release: "6.7.0-rc4", want: "6.7-rc4", ok: true},
		{release: "6.7.0-rc4-00012-gabcdef012345", want: "6.7-rc4+", ok: true},
		{release: "6.1.76+", want: "6.1.76+", ok: true},
		{release: "6.1.0-18-amd64", want: "6.1.y", abi: true, ok: true},
		{release: "5.15.0-91-generic", want: "5.15.y", abi: true, ok: true},
		{release: "5.14.0-362.8.1.el9_3.x86_64", want: "5.14.y", abi: true, ok: true},
		{release: "6.12.117+deb13-cloud-amd64", want: "6.12.117", ok: true},
		{release: "5.10.205-195.807.amzn2.x86_64", want: "5.10.205", ok: true},
		{release: "6.1.62-kata", want: "6.1.62", ok: true},
		{release: "4.19", want: "4.19.0", ok: true},
		{release: "", ok: false},
		{release: "linux", ok: false},
		{release: "6.x", ok: false},
		{release: "6.1.99999999999999999999", ok: false},
		{release: "6.7.0-rc0", ok: false},
	} {
		t.Run(tc.release, func(t *testing.T) {
			v, abi, ok := parseRelease(tc.release)
			require.Equal(t, tc.ok, ok)
			if !ok {
				return
			}
			require.Equal(t, tc.want, v.String())
			require.Equal(t, tc.abi, abi)
		})
	}
}

func TestDistroTail(t *testing.T) {
	for _, tc := range []struct {
		name, banner, tail, upstream string
	}{
		{"debian 12", bannerDebian, "Debian 6.1.76-1", "6.1.76"},
		{"debian backport", "Linux version 6.1.0-0.deb11.17-amd64 (debian-kernel@lists.debian.org) (gcc-10) #1 SMP PREEMPT_DYNAMIC Debian 6.1.69-1~bpo11+1 (2023-12-30)", "Debian 6.1.69-1~bpo11+1", "6.1.69"},
		{"debian experimental rc", "Linux version 6.7.0-rc7-amd64 (debian-kernel@lists.debian.org) (gcc-13) #1 SMP PREEMPT_DYNAMIC Debian 6.7~rc7-1~exp1 (2024-01-02)", "Debian 6.7~rc7-1~exp1", "6.7-rc7"},
		{"debian bzImage header", "5.10.0-32-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 5.10.223-1 (2024-08-10)", "Debian 5.10.223-1", "5.10.223"},
		{"ubuntu", "Linux version 5.15.0-91-generic (buildd@lcy02-amd64-045) (gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0, GNU ld (GNU Binutils for Ubuntu) 2.38) #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023", "Ubuntu", ""},
		{"ubuntu hwe", "Linux version 6.5.0-14-generic (buildd@lcy02-amd64-110) (x86_64-linux-gnu-gcc-12) #14~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC Mon Nov 20 18:15:30 UTC 2", "Ubuntu", ""},
		{"upstream", bannerFixed61, "", ""},
		{"gcc mentions debian only", "Linux version 6.1.69 (ksg@build) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tail, upstream := distroTail(tc.banner)
			require.Equal(t, tc.tail, tail)
			require.Equal(t, tc.upstream, upstream)
		})
	}
}

// TestVersionMatrix runs every stable line, release candidates, distro tails,
// 5.10.y and pre-5.10 kernels through the version rules.
func TestVersionMatrix(t *testing.T) {
	for _, tc := range []struct {
		release, banner string
		want            Verdict
		version         string
	}{
		// Before submounts.
		{release: "4.19.304", want: Unaffected},
		{release: "5.4.268", want: Unaffected},
		{release: "5.9.16", want: Unaffected},
		{release: "5.9.0-rc8", want: Unaffected},
		{release: "3.10.0", want: Unaffected},
		// 5.10: submounts arrived, never fixed.
		{release: "5.10.0-rc1", want: Vulnerable},
		{release: "5.10.0", want: Vulnerable},
		{release: "5.10.209", want: Vulnerable},
		{release: "5.10.999", want: Vulnerable},
		// Lines that ended unfixed.
		{release: "5.11.22", want: Vulnerable},
		{release: "5.14.21", want: Vulnerable},
		{release: "5.16.20", want: Vulnerable},
		{release: "5.19.17", want: Vulnerable},
		{release: "6.0.19", want: Vulnerable},
		{release: "6.2.16", want: Vulnerable},
		{release: "6.5.13", want: Vulnerable},
		// 5.15.146+
		{release: "5.15.0", want: Vulnerable},
		{release: "5.15.145", want: Vulnerable},
		{release: "5.15.146", want: Fixed},
		{release: "5.15.170", want: Fixed},
		// 6.1.70+
		{release: "6.1.0-rc8", want: Vulnerable},
		{release: "6.1.0", want: Vulnerable},
		{release: "6.1.69", want: Vulnerable},
		{release: "6.1.70", want: Fixed},
		{release: "6.1.192", want: Fixed},
		// 6.6.8+
		{release: "6.6.0", want: Vulnerable},
		{release: "6.6.7", want: Vulnerable},
		{release: "6.6.8", want: Fixed},
		{release: "6.6.70", want: Fixed},
		// 6.7: fixed between rc4 and rc7.
		{release: "6.7.0-rc1", want: Vulnerable},
		{release: "6.7.0-rc4", want: Vulnerable},
		{release: "6.7.0-rc5", want: Unknown},
		{release: "6.7.0-rc6", want: Unknown},
		{release: "6.7.0-rc7", want: Fixed},
		{release: "6.7.0-rc8", want: Fixed},
		{release: "6.7.0", want: Fixed},
		{release: "6.7.12", want: Fixed},
		{release: "6.7.0-rc4-00012-gabcdef", want: Unknown},
		{release: "6.7.0-rc7-00012-gabcdef", want: Fixed},
		// Later.
		{release: "6.8.0-rc1", want: Fixed},
		{release: "6.12.48", want: Fixed},
		{release: "7.0.0", want: Fixed},
		{release: "6.1.76+", want: Fixed},
		{release: "6.1.60+", want: Unknown},
		// Distro ABI names without an upstream version.
		{release: "6.1.0-18-amd64", banner: "Linux version 6.1.0-18-amd64 (x) #1 SMP", want: Unknown},
		{release: "5.15.0-91-generic", banner: "Linux version 5.15.0-91-generic (buildd@lcy02) (gcc) #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023", want: Unknown},
		{release: "6.8.0-31-generic", banner: "Linux version 6.8.0-31-generic (buildd@lcy02) (gcc) #31-Ubuntu SMP PREEMPT_DYNAMIC Sat Apr 20 00:40:06 UTC 2024", want: Fixed},
		{release: "5.10.0-28-amd64", banner: "Linux version 5.10.0-28-amd64 (x) #1 SMP", want: Vulnerable},
		{release: "4.18.0-513.5.1.el8_9.x86_64", want: Unknown},
		// Debian tails pin the upstream version.
		{release: "6.1.0-18-amd64", banner: bannerDebian, want: Fixed, version: "6.1.76"},
		{release: "6.1.0-17-amd64", banner: "Linux version 6.1.0-17-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP PREEMPT_DYNAMIC Debian 6.1.69-1 (2023-12-30)", want: Vulnerable, version: "6.1.69"},
		{release: "4.19.0-26-amd64", banner: "Linux version 4.19.0-26-amd64 (debian-kernel@lists.debian.org) (gcc version 8.3.0 (Debian 8.3.0-6)) #1 SMP Debian 4.19.304-1 (2024-01-09)", want: Unaffected, version: "4.19.304"},
		{release: "6.7.0-rc7-amd64", banner: "Linux version 6.7.0-rc7-amd64 (debian-kernel@lists.debian.org) (gcc-13) #1 SMP PREEMPT_DYNAMIC Debian 6.7~rc7-1~exp1 (2024-01-02)", want: Fixed, version: "6.7-rc7"},
		// A tail from another line is ignored.
		{release: "6.1.0-18-amd64", banner: "Linux version 6.1.0-18-amd64 (x) #1 SMP Debian 6.6.8-1 (2024-01-01)", want: Unknown, version: "6.1.y"},
		// Not a version at all.
		{release: "mykernel", want: Unknown},
	} {
		t.Run(tc.release+"/"+string(tc.want), func(t *testing.T) {
			r := &Report{Release: tc.release, Banner: tc.banner}
			Judge(r, nil)
			require.Equal(t, tc.want, r.Verdict, r.Reason)
			require.NotEmpty(t, r.Reason)
			if tc.version != "" {
				require.Equal(t, tc.version, r.Version)
			}
			if r.Verdict == Unknown {
				require.Equal(t, EvidenceNone, r.Evidence)
			} else {
				require.Equal(t, EvidenceVersion, r.Evidence)
			}
		})
	}
}
