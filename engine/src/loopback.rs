//! Free loopback ports for clusters started inside one process (the bench's
//! embedded cluster, the integration tests).

use std::io;
use std::net::TcpListener;

/// Tries at finding one run before giving up.
const TRIES_PER_RUN_MAX: usize = 1000;

/// The bases of `runs` runs of `ports_per_run` consecutive loopback ports,
/// each free right now and no two overlapping: node `i` of a cluster then
/// binds its cores' peer ports from base `i`. Every port found is held until
/// all runs are, so the kernel cannot hand one out twice (it may when each
/// run is looked for on its own); another process may still take one before
/// the cluster binds it.
pub fn free_port_runs(runs: usize, ports_per_run: u16) -> io::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut bases = Vec::with_capacity(runs);
    for _ in 0..runs {
        let found = (0..TRIES_PER_RUN_MAX).find_map(|_| {
            let first = TcpListener::bind("127.0.0.1:0").ok()?;
            let base = first.local_addr().ok()?.port();
            base.checked_add(ports_per_run.saturating_sub(1))?;
            let rest: Vec<TcpListener> = (1..ports_per_run).map(|k| TcpListener::bind(("127.0.0.1", base + k))).collect::<Result<_, _>>().ok()?;
            Some((base, first, rest))
        });
        let Some((base, first, rest)) = found else {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, format!("found no run of {ports_per_run} free loopback ports in {TRIES_PER_RUN_MAX} tries")));
        };
        bases.push(base);
        held.push(first);
        held.extend(rest);
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_free_and_never_overlap() {
        for _ in 0..50 {
            let mut bases = free_port_runs(3, 4).unwrap();
            bases.sort_unstable();
            assert!(bases.windows(2).all(|w| w[0] + 4 <= w[1]), "{bases:?}");
            for &base in &bases {
                let held: Vec<TcpListener> = (0..4).map(|k| TcpListener::bind(("127.0.0.1", base + k)).unwrap()).collect();
                drop(held);
            }
        }
    }
}
