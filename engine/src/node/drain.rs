//! Taking a node out of service: the switches its cores share, and when a
//! drain is over (read from the counters of its cores, by the embedded API,
//! `Cluster::drain_and_wait`, and by the client protocol's `Drain` alike).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::metrics::CoreMetrics;

/// Switches shared by all the cores of a node.
#[derive(Clone, Default)]
pub struct NodeSwitches {
    /// The node drains: its ticks hand its leaderships over, and its frames
    /// tell its peers (see `Cluster::drain`).
    pub drain: Arc<AtomicBool>,
    /// The node is about to stop: its client connections are told so, at
    /// the next tick (see `Cluster::close_clients_and_wait`).
    pub close_clients: Arc<AtomicBool>,
}

/// How often a drain's waiter reads the counters.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// After a drain, how long a stopping node waits for its clients to close
/// their connections (told it stops: `Cluster::close_clients_and_wait`).
pub const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Longest wait a client's `Drain` may ask for.
pub const DRAIN_WAIT_MS_MAX: u32 = 600_000;

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// The node leads no group, knows every group's leader and has answered
    /// every request that waited on its groups.
    Settled,
    /// What the node still leads, no other voter is up to take.
    NoTaker { leaders: u64 },
}

/// Watches a drain from its start: only the cores' walks since count.
pub struct DrainWatch {
    /// Each core's `drain_ticks` when the drain began.
    walks_before: Vec<u64>,
}

impl DrainWatch {
    /// Called before the drain flag is set.
    pub fn start(cores: &[Arc<CoreMetrics>]) -> DrainWatch {
        DrainWatch { walks_before: cores.iter().map(|m| m.drain_ticks.load(Ordering::Acquire)).collect() }
    }

    /// The end, once every core has walked its groups since the start and
    /// has nothing left to settle, or leads only groups no one can take.
    pub fn end(&self, cores: &[Arc<CoreMetrics>]) -> Option<DrainEnd> {
        let mut stuck = 0;
        for (m, &before) in cores.iter().zip(&self.walks_before) {
            if m.drain_ticks.load(Ordering::Acquire) <= before {
                return None;
            }
            let leaders = m.leaders.load(Ordering::Relaxed);
            if leaders > 0 && leaders <= m.leaderships_without_transfer_target.load(Ordering::Relaxed) {
                stuck += leaders;
            } else if m.drain_unsettled.load(Ordering::Relaxed) > 0 {
                return None;
            }
        }
        Some(if stuck > 0 { DrainEnd::NoTaker { leaders: stuck } } else { DrainEnd::Settled })
    }
}
