//! CPU time and peak memory of this process, read from the kernel, so that
//! every mode reports `cpu_user_s`, `cpu_sys_s` and `rss_max_bytes` the same way.

/// A reading of the process's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User CPU seconds of every thread of the process since it started.
    pub cpu_user_s: f64,
    /// System CPU seconds of every thread of the process since it started.
    pub cpu_sys_s: f64,
    /// Peak resident set size since the process started (a high-water mark,
    /// never a delta).
    pub rss_max_bytes: u64,
}

impl ProcessStats {
    /// Reads the current figures with `getrusage(RUSAGE_SELF)`; the peak RSS
    /// falls back to `VmHWM` of /proc/self/status if `ru_maxrss` is zero.
    pub fn now() -> ProcessStats {
        // SAFETY: `rusage` is plain old data, so all-zero is a valid value,
        // and getrusage only writes into the struct we hand it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF is a valid `who`; `usage` is a valid pointer.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        assert_eq!(
            rc, 0,
            "getrusage(RUSAGE_SELF) cannot fail with valid arguments"
        );
        // On Linux ru_maxrss is in KiB.
        let maxrss_bytes = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
        let rss_max_bytes = if maxrss_bytes > 0 {
            maxrss_bytes
        } else {
            vm_hwm_bytes().unwrap_or(0)
        };
        ProcessStats {
            cpu_user_s: timeval_s(usage.ru_utime),
            cpu_sys_s: timeval_s(usage.ru_stime),
            rss_max_bytes,
        }
    }

    /// The CPU spent between `earlier` and `self`; the peak RSS stays the
    /// process's high-water mark.
    pub fn since(&self, earlier: &ProcessStats) -> ProcessStats {
        ProcessStats {
            cpu_user_s: (self.cpu_user_s - earlier.cpu_user_s).max(0.0),
            cpu_sys_s: (self.cpu_sys_s - earlier.cpu_sys_s).max(0.0),
            rss_max_bytes: self.rss_max_bytes.max(earlier.rss_max_bytes),
        }
    }
}

fn timeval_s(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// `VmHWM` (peak resident set) from /proc/self/status, in bytes.
fn vm_hwm_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm_bytes(&status)
}

fn parse_vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_monotone_and_plausible() {
        let before = ProcessStats::now();
        // Burn a little CPU so the user time can only grow.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = ProcessStats::now();
        let delta = after.since(&before);
        assert!(delta.cpu_user_s >= 0.0 && delta.cpu_sys_s >= 0.0);
        assert!(after.cpu_user_s >= before.cpu_user_s);
        // Any test process has touched more than a MiB.
        assert!(
            after.rss_max_bytes > 1 << 20,
            "rss_max_bytes = {}",
            after.rss_max_bytes
        );
    }

    #[test]
    fn vm_hwm_is_parsed_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm_bytes(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm_bytes("Name:\tx\n"), None);
    }
}
