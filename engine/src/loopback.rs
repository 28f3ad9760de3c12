//! Free loopback ports for clusters started inside one process (the bench's
//! embedded cluster, the integration tests).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Tries at finding one run before giving up.
const TRIES_PER_RUN_MAX: usize = 1000;
/// Lowest port handed out.
const PORT_MIN: u32 = 10_000;
/// The kernel's ephemeral range starts here unless
/// `/proc/sys/net/ipv4/ip_local_port_range` says otherwise.
const EPHEMERAL_MIN_DEFAULT: u32 = 32_768;

/// The bases of `runs` runs of `ports_per_run` consecutive loopback ports,
/// each free right now and no two overlapping: node `i` of a cluster then
/// binds its cores' peer ports from base `i`.
///
/// The ports lie below the kernel's ephemeral range, so that no outgoing
/// connection takes one as its source port while its node is down: a node
/// restarted on its configuration binds the same ports again. A process
/// hands out each port once (from a cursor that starts at a place of its
/// own and wraps around), so two clusters of one process never meet;
/// another process may still take one before the cluster binds it.
pub fn free_port_runs(runs: usize, ports_per_run: u16) -> io::Result<Vec<u16>> {
    let ports = u32::from(ports_per_run.max(1));
    let top = ephemeral_min();
    if top <= PORT_MIN + ports * 64 {
        return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, format!("the ephemeral port range starts at {top}: too few ports below it")));
    }
    let span = top - PORT_MIN;
    let mut bases = Vec::with_capacity(runs);
    for _ in 0..runs {
        let found = (0..TRIES_PER_RUN_MAX).find_map(|_| {
            let base = PORT_MIN + next_offset(ports, span);
            if base + ports > top {
                return None;
            }
            let held: Vec<TcpListener> = (0..ports).map(|k| TcpListener::bind(("127.0.0.1", (base + k) as u16))).collect::<Result<_, _>>().ok()?;
            drop(held);
            Some(base as u16)
        });
        let Some(base) = found else {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, format!("found no run of {ports_per_run} free loopback ports in {TRIES_PER_RUN_MAX} tries")));
        };
        bases.push(base);
    }
    Ok(bases)
}

/// Where this process hands out its next ports, counted from `PORT_MIN`
/// (`u32::MAX`: not chosen yet).
static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);

/// The offset of the next `ports` ports in a span of `span`. The cursor
/// starts at a place that depends on the process id and the clock, so that
/// processes started together (test binaries, benches) look in different
/// places.
fn next_offset(ports: u32, span: u32) -> u32 {
    if CURSOR.load(Ordering::Relaxed) == u32::MAX {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let start = (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span;
        let _ = CURSOR.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    CURSOR.fetch_add(ports, Ordering::Relaxed) % span
}

fn ephemeral_min() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_MIN_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_free_and_never_overlap() {
        for _ in 0..50 {
            let mut bases = free_port_runs(3, 4).unwrap();
            assert!(bases.iter().all(|&b| u32::from(b) >= PORT_MIN && u32::from(b) + 4 <= ephemeral_min()), "{bases:?} not below the ephemeral range");
            bases.sort_unstable();
            assert!(bases.windows(2).all(|w| w[0] + 4 <= w[1]), "{bases:?}");
            for &base in &bases {
                let held: Vec<TcpListener> = (0..4).map(|k| TcpListener::bind(("127.0.0.1", base + k)).unwrap()).collect();
                drop(held);
            }
        }
    }
}
