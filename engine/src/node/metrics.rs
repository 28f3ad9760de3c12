//! Counters each core keeps for the whole node: relaxed atomics written by
//! the core, read by anyone (the bench, an admin endpoint) at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raftcore::Traffic;

#[derive(Debug, Default)]
pub struct CoreMetrics {
    pub readies: AtomicU64,
    pub wal_entries: AtomicU64,
    pub wal_records: AtomicU64,
    pub wal_syncs: AtomicU64,
    /// 1 while the core's WAL waits for disk space or a file descriptor
    /// for its next segment (`Wal::disk_full`).
    pub wal_disk_full: AtomicU64,
    pub frames_sent: AtomicU64,
    pub keepalive_frames: AtomicU64,
    pub heartbeat_frames: AtomicU64,
    pub messages_sent: AtomicU64,
    /// Messages sent, by what they do (indexed by `Traffic as usize`).
    pub messages_by_traffic: [AtomicU64; Traffic::COUNT],
    pub frames_received: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub connections_refused: AtomicU64,
    pub peer_dials_refused: AtomicU64,
    pub peer_connections: AtomicU64,
    pub peers_silent: AtomicU64,
    pub unknown_group_messages: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshot_save_failures: AtomicU64,
    pub client_requests: AtomicU64,
    pub client_connections: AtomicU64,
    pub client_connections_refused: AtomicU64,
    pub client_protocol_errors: AtomicU64,
    pub groups_created: AtomicU64,
    pub groups_deleted: AtomicU64,
    pub groups_created_by_peers: AtomicU64,
    pub groups_set_aside: AtomicU64,
    pub requests_forwarded: AtomicU64,
    pub leaders: AtomicU64,
    pub leader_stepdowns: AtomicU64,
    pub leader_transfers_started: AtomicU64,
    pub leaderships_without_transfer_target: AtomicU64,
    pub leaders_balanced: AtomicU64,
    pub drain_unsettled: AtomicU64,
    pub draining: AtomicU64,
    /// Ticks at which this core handed leaderships over (`Cluster::drain`).
    pub drain_ticks: AtomicU64,
    pub drain_groups_visited: AtomicU64,
    /// Ticks since this core told its client connections that the node is
    /// about to stop (`Cluster::close_clients_and_wait`), and the requests
    /// read from them still waiting for an answer at the last one.
    pub closing_ticks: AtomicU64,
    pub closing_requests_waiting: AtomicU64,
    pub quiesced_groups: AtomicU64,
    pub log_entries_in_memory: AtomicU64,
}

/// A reading of the counters, summed over cores.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    pub readies: u64,
    pub wal_entries: u64,
    pub wal_records: u64,
    pub wal_syncs: u64,
    /// Cores whose WAL had no disk space (or no file descriptor) for its next
    /// segment at their last tick: their writes that need it wait until
    /// space (or a descriptor) is freed.
    pub wal_disk_full_cores: u64,
    pub frames_sent: u64,
    /// Empty frames of links that had nothing else to send (not in
    /// `frames_sent`).
    pub keepalive_frames: u64,
    /// Frames that carried only heartbeats and their responses.
    pub heartbeat_frames: u64,
    pub messages_sent: u64,
    /// `messages_sent` by what the messages do: appends with entries,
    /// empty appends, heartbeats asking an answer or not, votes, …
    pub messages_by_traffic: TrafficCounts,
    pub frames_received: u64,
    pub frames_dropped: u64,
    pub connections_refused: u64,
    /// Dials of a peer that this node hung up on: the core that answered
    /// was not the one configured (another node, cluster, protocol version
    /// or core layout).
    pub peer_dials_refused: u64,
    /// Inbound peer connections open now, handshakes in progress included
    /// (a gauge).
    pub peer_connections: u64,
    /// Inbound peer connections closed because nothing came for the
    /// silence timeout (the peer counted lost until it is heard again).
    pub peers_silent: u64,
    pub unknown_group_messages: u64,
    /// Snapshots of the core's own compactions saved.
    pub snapshots: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Snapshots of a core's own compactions that could not be saved (the
    /// WAL keeps their entries).
    pub snapshot_save_failures: u64,
    pub client_requests: u64,
    /// Client connections open now (a gauge).
    pub client_connections: u64,
    /// Client connections closed at once because their core had its share
    /// of `client_connections_max` open.
    pub client_connections_refused: u64,
    /// Client connections closed because what came over them broke the
    /// protocol (a bad hello, a malformed or oversized frame).
    pub client_protocol_errors: u64,
    pub groups_created: u64,
    pub groups_deleted: u64,
    /// Groups created here because a peer's leader or candidate sent a
    /// message for one this node lacked (created while it was down, or
    /// before the client's request reached it); in `groups_created` too.
    pub groups_created_by_peers: u64,
    /// Groups taken out of service because their leader's snapshot did not
    /// restore; their data stays, and a restart tries them again.
    pub groups_set_aside: u64,
    /// Client requests that arrived on a core not owning their group.
    pub requests_forwarded: u64,
    /// Groups this node leads (as of each core's last tick).
    pub leaders: u64,
    /// Times a replica of this node stopped leading its group.
    pub leader_stepdowns: u64,
    /// Leadership transfers this node started, draining or balancing (one
    /// group may need more than one, when a transfer is abandoned).
    pub leader_transfers_started: u64,
    /// Groups a draining node leads that no other voter is up to take (as
    /// of each core's last drain tick).
    pub leaderships_without_transfer_target: u64,
    /// What a draining node has left to settle, as of each core's last
    /// drain tick: the groups it still leads, those whose leader it does not
    /// know, and the client requests waiting on its groups for an answer
    /// (writes in flight, also those of leaderships handed over, and
    /// reads). 0 when the drain is complete.
    pub drain_unsettled: u64,
    /// Group replicas the drain ticks visited: the awake ones, and the
    /// resting ones only while one of them may lead.
    pub drain_groups_visited: u64,
    /// Cores of the node that drain (as of each core's last tick): all of
    /// them from a drain's start (`Cluster::drain`, the client's `Drain`)
    /// to its end (`undrain`, `Undrain`), none otherwise.
    pub cores_draining: u64,
    /// Leadership transfers this node started to balance leaders (see
    /// `balance_leaders` in the configuration).
    pub leaders_balanced: u64,
    /// Groups not being ticked (as of each core's last tick).
    pub quiesced_groups: u64,
    /// Raft log entries held in memory (as of each core's last budget
    /// check, once a second).
    pub log_entries_in_memory: u64,
}

impl MetricsSnapshot {
    pub fn sum<'a>(cores: impl IntoIterator<Item = &'a CoreMetrics>) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        for m in cores {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.readies += get(&m.readies);
            s.wal_entries += get(&m.wal_entries);
            s.wal_records += get(&m.wal_records);
            s.wal_syncs += get(&m.wal_syncs);
            s.wal_disk_full_cores += get(&m.wal_disk_full);
            s.keepalive_frames += get(&m.keepalive_frames);
            s.frames_sent += get(&m.frames_sent);
            s.heartbeat_frames += get(&m.heartbeat_frames);
            s.messages_sent += get(&m.messages_sent);
            for (sum, count) in s.messages_by_traffic.0.iter_mut().zip(&m.messages_by_traffic) {
                *sum += get(count);
            }
            s.frames_received += get(&m.frames_received);
            s.frames_dropped += get(&m.frames_dropped);
            s.peer_connections += get(&m.peer_connections);
            s.connections_refused += get(&m.connections_refused);
            s.peer_dials_refused += get(&m.peer_dials_refused);
            s.peers_silent += get(&m.peers_silent);
            s.unknown_group_messages += get(&m.unknown_group_messages);
            s.snapshots += get(&m.snapshots);
            s.snapshots_installed += get(&m.snapshots_installed);
            s.snapshot_save_failures += get(&m.snapshot_save_failures);
            s.client_connections += get(&m.client_connections);
            s.client_connections_refused += get(&m.client_connections_refused);
            s.client_protocol_errors += get(&m.client_protocol_errors);
            s.client_requests += get(&m.client_requests);
            s.groups_created += get(&m.groups_created);
            s.groups_deleted += get(&m.groups_deleted);
            s.groups_created_by_peers += get(&m.groups_created_by_peers);
            s.groups_set_aside += get(&m.groups_set_aside);
            s.requests_forwarded += get(&m.requests_forwarded);
            s.leaders += get(&m.leaders);
            s.leader_stepdowns += get(&m.leader_stepdowns);
            s.leader_transfers_started += get(&m.leader_transfers_started);
            s.leaderships_without_transfer_target += get(&m.leaderships_without_transfer_target);
            s.drain_unsettled += get(&m.drain_unsettled);
            s.drain_groups_visited += get(&m.drain_groups_visited);
            s.cores_draining += get(&m.draining);
            s.leaders_balanced += get(&m.leaders_balanced);
            s.quiesced_groups += get(&m.quiesced_groups);
            s.log_entries_in_memory += get(&m.log_entries_in_memory);
        }
        s
    }
}

/// Message counts by `Traffic` kind; serialized as an object keyed by the
/// kinds' names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts(pub [u64; Traffic::COUNT]);

impl TrafficCounts {
    pub fn get(&self, kind: Traffic) -> u64 {
        self.0[kind as usize]
    }

    /// The counts since `earlier`.
    pub fn since(&self, earlier: &TrafficCounts) -> TrafficCounts {
        TrafficCounts(std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i])))
    }
}

impl serde::Serialize for TrafficCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(Traffic::ALL.iter().map(|&t| (t.name(), self.get(t))))
    }
}

/// Holds one unit of a gauge of a core's metrics (an open connection, say)
/// until dropped, so that a task cancelled midway gives it back too.
pub struct GaugeHold {
    metrics: Arc<CoreMetrics>,
    gauge: fn(&CoreMetrics) -> &AtomicU64,
}

impl GaugeHold {
    pub fn new(metrics: &Arc<CoreMetrics>, gauge: fn(&CoreMetrics) -> &AtomicU64) -> GaugeHold {
        gauge(metrics).fetch_add(1, Ordering::Relaxed);
        GaugeHold { metrics: metrics.clone(), gauge }
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}
