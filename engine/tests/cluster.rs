//! Three real nodes on loopback (TCP, fsynced WALs): elections across many
//! groups, replication, reads, a crash and restart, leader failover, a node
//! partitioned and healed, and hostile bytes on the peer and client ports.

mod cluster_common;

use std::time::Duration;

use bytes::Bytes;
use cluster_common::relay::Break;
use cluster_common::{eventually, expect_done, TestCluster};
use engine::client::proto::{Consistency, Op, Reply};
use engine::client::{Client, Outcome};
use raftcore::Traffic;

fn value(group: u64, i: u64) -> Bytes {
    Bytes::from(format!("g{group}-v{i}"))
}

/// Puts `value(g, i)` under `key` in every group `g`, each acknowledged.
fn put_in_every_group(client: &mut Client, groups: u64, key: &str, i: u64, what: &str) {
    for g in 1..=groups {
        expect_done(client.put(g, key.to_owned(), value(g, i)), what);
    }
}

#[test]
fn groups_elect_replicate_and_serve_linearizable_reads() {
    let groups = 2000;
    let c = TestCluster::start(groups, 2);
    eventually(Duration::from_secs(30), "a leader for every group", || (1..=3).map(|id| c.metrics(id).leaders).sum::<u64>() == groups);
    // Randomized election timeouts spread the leaderships over the nodes.
    for id in 1..=3 {
        assert!(c.metrics(id).leaders > groups / 10, "node {id} leads {} of {groups} groups", c.metrics(id).leaders);
    }
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 1, "first put");
    for g in 1..=groups {
        assert_eq!(client.get(g, "k"), Outcome::Ok(Reply::Value(Some(value(g, 1)))), "group {g}");
    }
    expect_done(client.cas(1, "k", Some(value(1, 1)), Some(value(1, 2))), "cas");
    assert_eq!(client.cas(1, "k", Some(value(1, 1)), None), Outcome::Ok(Reply::CasFailed { current: Some(value(1, 2)) }));
    expect_done(client.delete(2, "k"), "delete");
    assert_eq!(client.get(2, "k"), Outcome::Ok(Reply::Value(None)));
    // Every replica applies every write: stale reads on each node converge.
    for id in 1..=3 {
        let mut local = c.client_of(id);
        eventually(Duration::from_secs(10), "replica caught up", || {
            local.call(1, Op::Get { key: Bytes::from("k"), consistency: Consistency::Stale }) == Outcome::Ok(Reply::Value(Some(value(1, 2))))
        });
    }
    let m = c.metrics(1);
    assert!(m.wal_syncs > 0 && m.frames_sent > 0, "{m:?}");
    // Frames carry the messages of many groups (about 3.6 a frame here,
    // and the heartbeats of about 4 groups a heartbeat frame): a frame per
    // message, or per group's heartbeat, would be 1.
    assert!(m.messages_sent >= 2 * m.frames_sent, "frames carry batches: {m:?}");
    let heartbeats: u64 = [Traffic::HeartbeatAsking, Traffic::Heartbeat, Traffic::HeartbeatAnswer].into_iter().map(|t| m.messages_by_traffic.get(t)).sum();
    assert!(m.heartbeat_frames > 0 && heartbeats >= 2 * m.heartbeat_frames, "heartbeats coalesced: {heartbeats} in {} frames", m.heartbeat_frames);
}

#[test]
fn logs_over_the_memory_budget_are_compacted_and_lose_nothing() {
    let (groups, budget) = (20, 100);
    // Logs never reach the compaction interval: only the budget (per core)
    // compacts them.
    let mut c = TestCluster::start_with(groups, 2, |cfg| {
        cfg.compact_every_entries = 1 << 40;
        cfg.log_entries_in_memory_max = budget;
    });
    let mut client = c.client();
    for i in 0..20 {
        for g in 1..=groups {
            expect_done(client.put(g, format!("k{i}"), value(g, i)), "put");
        }
    }
    eventually(Duration::from_secs(20), "every node back under its budget", || {
        (1..=3).all(|id| {
            let m = c.metrics(id);
            m.snapshots > 0 && m.log_entries_in_memory <= 2 * budget
        })
    });
    // Snapshots and WAL together still hold every write, also after a
    // whole-cluster restart.
    c.restart_all();
    let mut client = c.client();
    for g in 1..=groups {
        for i in [0, 10, 19] {
            assert_eq!(client.get(g, format!("k{i}")), Outcome::Ok(Reply::Value(Some(value(g, i)))), "group {g} k{i}");
        }
    }
}

#[test]
fn snapshots_that_cannot_be_saved_leave_their_entries_in_the_wal() {
    let groups = 2;
    let c = TestCluster::start(groups, 1);
    // A directory where group 1's temporary snapshot file goes: no node can
    // save a snapshot of group 1 (root included). Group 2 saves as usual.
    for id in 1..=3 {
        let snapshots = c.dir.path().join(format!("node-{id}/core-0/snapshots"));
        std::fs::create_dir(snapshots.join(format!("g{:016x}.snap.tmp", 1))).unwrap();
    }
    let mut client = c.client();
    // Far past the compaction interval (64 entries in tests).
    for i in 0..300 {
        for g in 1..=groups {
            expect_done(client.put(g, format!("k{i}"), value(g, i)), "put");
        }
    }
    eventually(Duration::from_secs(20), "every node failed to save group 1 and saved group 2", || {
        (1..=3).all(|id| {
            let m = c.metrics(id);
            m.snapshot_save_failures > 0 && m.snapshots > 0
        })
    });
    let mut c = c;
    c.restart_all();
    let mut client = c.client();
    for g in 1..=groups {
        for i in [0, 150, 299] {
            assert_eq!(client.get(g, format!("k{i}")), Outcome::Ok(Reply::Value(Some(value(g, i)))), "group {g} k{i}");
        }
    }
}

fn stale_get(c: &TestCluster, node: u64, group: u64, key: &str) -> Outcome {
    c.client_of(node).call(group, Op::Get { key: Bytes::copy_from_slice(key.as_bytes()), consistency: Consistency::Stale })
}

/// A value of 128 KiB.
fn big_value(i: u64) -> Bytes {
    Bytes::from(vec![i as u8; 128 << 10])
}

/// Kills node 3, puts `big_value(i)` under `big{i}` in group 1 for each
/// `i < big_writes`, then `k0 ..` `writes` times: far past the compaction
/// interval (64 entries in tests), so the survivors compact their logs and
/// node 3 can only catch up group 1 by snapshot.
fn leave_node_3_behind_in_group_1(c: &mut TestCluster, client: &mut Client, big_writes: u64, writes: u64) {
    c.kill(3);
    let mut put = |key: String, value: Bytes| {
        // The first write may go to node 3 as it dies (if it led group 1)
        // and end unknown; written again it is the same write.
        let mut tries = 0;
        loop {
            match client.put(1, key.clone(), value.clone()) {
                Outcome::Ok(Reply::Done) => break,
                Outcome::Unknown(_) if tries < 3 => tries += 1,
                other => panic!("put {key} while node 3 is down: {other:?}"),
            }
        }
    };
    for i in 0..big_writes {
        put(format!("big{i}"), big_value(i));
    }
    for i in 0..writes {
        put(format!("k{i}"), value(1, i));
    }
}

#[test]
fn killed_node_recovers_from_its_wal_and_catches_up_by_snapshot() {
    let groups = 16;
    let mut c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "put before the crash");
    for id in 1..=3 {
        eventually(Duration::from_secs(10), "every replica applied", || (1..=groups).all(|g| stale_get(&c, id, g, "k") == Outcome::Ok(Reply::Value(Some(value(g, 0))))));
    }
    // 2.5 MiB of state in group 1: its snapshot streams in 3 chunks of at
    // most 1 MiB.
    leave_node_3_behind_in_group_1(&mut c, &mut client, 20, 300);
    assert!(c.metrics(1).snapshots + c.metrics(2).snapshots > 0, "the survivors compacted");
    let chunks = |c: &TestCluster| -> u64 { [1, 2].iter().map(|&id| c.metrics(id).messages_by_traffic.get(Traffic::SnapshotChunk)).sum() };
    let chunks_before = chunks(&c);
    c.restart(3);
    // The other groups take writes while the snapshot streams (a new
    // client: node 3 serves on new client ports).
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "during", 0, "a write in every group while node 3 catches up");
    eventually(Duration::from_secs(20), "node 3 caught up group 1", || stale_get(&c, 3, 1, "k299") == Outcome::Ok(Reply::Value(Some(value(1, 299)))));
    assert!(c.metrics(3).snapshots_installed > 0, "node 3 installed a snapshot: {:?}", c.metrics(3));
    assert!(chunks(&c) - chunks_before >= 3, "a snapshot of 2.5 MiB streams in chunks of 1 MiB: {} chunks", chunks(&c) - chunks_before);
    assert_eq!(stale_get(&c, 3, 1, "big19"), Outcome::Ok(Reply::Value(Some(big_value(19)))));
    // Its other groups came back from its own WAL.
    for g in 2..=groups {
        eventually(Duration::from_secs(5), "node 3 re-applied its WAL", || stale_get(&c, 3, g, "k") == Outcome::Ok(Reply::Value(Some(value(g, 0)))));
    }
    // A whole-cluster restart loses nothing acknowledged.
    c.restart_all();
    let mut client = c.client();
    for i in [0, 150, 299] {
        assert_eq!(client.get(1, format!("k{i}")), Outcome::Ok(Reply::Value(Some(value(1, i)))));
    }
    for g in 2..=groups {
        assert_eq!(client.get(g, "k"), Outcome::Ok(Reply::Value(Some(value(g, 0)))), "group {g}");
    }
}

#[test]
fn leader_failover_keeps_every_acknowledged_write() {
    let groups = 8;
    let mut c = TestCluster::start(groups, 1);
    let mut client = c.client();
    expect_done(client.put(1, "warm", "up"), "first write");
    let leader = client.leader_of(1).expect("a leader answered");
    let mut acked = Vec::new();
    let mut unknown = 0;
    for i in 0..400u64 {
        if i == 100 {
            c.kill(leader);
        }
        match client.put(1 + i % groups, format!("f{i}"), value(0, i)) {
            Outcome::Ok(Reply::Done) => acked.push(i),
            Outcome::Unknown(_) => unknown += 1,
            other => panic!("write {i}: {other:?}"),
        }
    }
    assert!(acked.len() >= 300, "writes continued after the failover: {} acked, {unknown} unknown", acked.len());
    assert_ne!(client.leader_of(1), Some(leader));
    c.restart(leader);
    let mut reader = c.client();
    for i in acked {
        assert_eq!(reader.get(1 + i % groups, format!("f{i}")), Outcome::Ok(Reply::Value(Some(value(0, i)))), "acknowledged write {i} lost");
    }
}

#[test]
fn hostile_bytes_on_peer_and_client_ports_leave_the_node_serving() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use engine::transport::peer::INBOUND_CONNECTIONS_MAX;

    let c = TestCluster::start(4, 1);
    let mut client = c.client();
    expect_done(client.put(1, "before", "x"), "write before the attack");
    let peer_addr = c.configs[&1].peers[&1];
    let client_addr = c.client_addrs[&1][0];
    let send = |addr, bytes: &[u8]| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        // The node closes the connection: reading ends (EOF or reset), not
        // by the timeout.
        let mut sink = [0u8; 64];
        loop {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert!(!matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "the node kept a connection open after {bytes:02x?}");
                    break;
                }
            }
        }
    };
    let handshake = |cluster_id, node_id, version| {
        let mut out = Vec::new();
        engine::transport::wire::encode_handshake(&engine::transport::wire::Handshake { cluster_id, node_id, core: 0, cores: 1, version }, &mut out);
        out
    };
    let version = engine::node::PEER_PROTOCOL_VERSION;
    let hello = handshake(7, 2, version);
    let (wrong_cluster, wrong_version, stranger) = (handshake(8, 2, version), handshake(7, 2, version - 1), handshake(7, 9, version));
    let oversized = [hello.clone(), vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]].concat();
    let bad_crc = [hello.clone(), vec![4, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9]].concat();
    let mut garbage_body = hello.clone();
    let start = engine::framing::begin_frame(&mut garbage_body);
    garbage_body.extend_from_slice(&[0xAB; 300]);
    engine::framing::finish_frame(&mut garbage_body, start);
    let peer_attacks = [&b"GET / HTTP/1.1\r\n\r\n"[..], &wrong_cluster, &wrong_version, &stranger, &oversized, &bad_crc, &garbage_body];
    for attack in peer_attacks {
        send(peer_addr, attack);
    }
    let mut client_hello = Vec::new();
    engine::client::proto::encode_client_hello(&mut client_hello);
    let mut bad_op = client_hello.clone();
    let start = engine::framing::begin_frame(&mut bad_op);
    bad_op.extend_from_slice(&[0; 16]);
    bad_op.push(200);
    engine::framing::finish_frame(&mut bad_op, start);
    let client_attacks = [&b"\x00\x01garbage"[..], &[client_hello.clone(), vec![0xff; 8]].concat(), &bad_op];
    for attack in client_attacks {
        send(client_addr, attack);
    }
    eventually(Duration::from_secs(5), "every refusal counted", || {
        let m = c.metrics(1);
        m.connections_refused >= peer_attacks.len() as u64 && m.client_protocol_errors >= client_attacks.len() as u64
    });
    expect_done(client.put(1, "after", "y"), "write after the attack");
    assert_eq!(client.get(1, "before"), Outcome::Ok(Reply::Value(Some(Bytes::from("x")))));

    // Strangers that open peer connections and say nothing take at most
    // INBOUND_CONNECTIONS_MAX of them: the rest are closed at once, the
    // silent ones once the handshake time (the silence timeout, 20 ticks of
    // 50 ms) is up, and the peers keep or get back their places.
    let refused_before = c.metrics(1).connections_refused;
    let extra = 40;
    let flood: Vec<TcpStream> = (0..INBOUND_CONNECTIONS_MAX + extra).map(|_| TcpStream::connect(peer_addr).unwrap()).collect();
    eventually(Duration::from_secs(5), "connections past the limit refused", || c.metrics(1).connections_refused >= refused_before + extra as u64);
    assert!(c.metrics(1).peer_connections <= INBOUND_CONNECTIONS_MAX as u64, "{:?}", c.metrics(1));
    eventually(Duration::from_secs(10), "the silent connections closed", || c.metrics(1).peer_connections <= 2);
    drop(flood);
    expect_done(client.put(1, "after the flood", "z"), "write after the flood");
    for id in 1..=3 {
        eventually(Duration::from_secs(10), "every replica applied it", || stale_get(&c, id, 1, "after the flood") == Outcome::Ok(Reply::Value(Some(Bytes::from("z")))));
    }
}

/// A leader's snapshot that does not restore (here from an impostor that
/// speaks for a killed peer: bytes that are no KV snapshot for group 1, an
/// empty KV snapshot at index 0 sent as index 1,000 for group 2) takes only
/// its group out of service on the receiving node: the node's other groups
/// go on, and a restart brings the groups back as they were.
#[test]
fn a_snapshot_that_does_not_restore_sets_aside_only_its_group() {
    use std::io::Write;

    use engine::transport::wire::{encode_batch, encode_handshake, Envelope, Handshake};
    use raftcore::{ConfState, LogIndex, Message, MessageBody, NodeId, SnapshotMeta, Term};

    let mut c = TestCluster::start(4, 1);
    let mut client = c.client();
    expect_done(client.put(1, "before", "x"), "write before the attack");
    c.kill(2);
    let mut frame = Vec::new();
    encode_handshake(&Handshake { cluster_id: 7, node_id: 2, core: 0, cores: 1, version: engine::node::PEER_PROTOCOL_VERSION }, &mut frame);
    let meta = SnapshotMeta { index: LogIndex(1_000), term: Term(1_000), conf_state: ConfState { voters: vec![NodeId(1), NodeId(2), NodeId(3)], ..Default::default() } };
    let envelope = |group: u64, data: Bytes| {
        let chunk = MessageBody::SnapshotChunk { meta: Box::new(meta.clone()), offset: 0, data, last: true };
        Envelope { group, msg: Message { from: NodeId(2), to: NodeId(1), term: Term(1_000), body: chunk } }
    };
    let empty_at_zero = engine::kv::StateMachine::snapshot(&engine::kv::KvStore::new());
    encode_batch(&[envelope(1, Bytes::from_static(b"not a KV snapshot")), envelope(2, empty_at_zero)], &mut frame);
    let mut impostor = std::net::TcpStream::connect(c.configs[&1].peers[&1]).unwrap();
    impostor.write_all(&frame).unwrap();
    eventually(Duration::from_secs(10), "groups 1 and 2 set aside on node 1", || c.metrics(1).groups_set_aside == 2);
    drop(impostor);

    // Nodes 1 and 3 are a quorum of every other group.
    for group in 3..=4 {
        expect_done(client.put(group, "after", "y"), "a write to another group of node 1");
    }
    match c.client_of(1).get(1, "before") {
        Outcome::Failed(e) => assert!(e.contains("set aside"), "{e}"),
        other => panic!("node 1 answered a read of a group set aside with {other:?}"),
    }
    c.kill(1);
    c.restart(1);
    c.restart(2);
    let mut client = c.client();
    expect_done(client.put(1, "after", "y"), "a write to the group once its nodes restarted");
    assert_eq!(client.get(1, "before"), Outcome::Ok(Reply::Value(Some(Bytes::from("x")))));
}

#[test]
fn requests_on_the_wrong_core_are_forwarded_to_the_owner() {
    let groups = 16;
    let c = TestCluster::start(groups, 2);
    // A client that knows only core 0 of each node sends everything there.
    let nodes = c.client_addrs.iter().map(|(&id, addrs)| (id, vec![addrs[0]])).collect();
    let mut client = engine::client::Client::new(engine::client::ClusterMap { nodes }, Default::default());
    for g in 1..=groups {
        expect_done(client.put(g, "k", value(g, 7)), "put through core 0");
        assert_eq!(client.get(g, "k"), Outcome::Ok(Reply::Value(Some(value(g, 7)))));
    }
    let forwarded: u64 = (1..=3).map(|id| c.metrics(id).requests_forwarded).sum();
    assert!(forwarded > 0, "groups of core 1 went through core 0");
}

#[test]
fn groups_are_created_and_deleted_at_runtime_and_survive_restarts() {
    let mut c = TestCluster::start(4, 2);
    let mut client = c.client();
    assert!(matches!(client.put(1000, "k", "v"), Outcome::Failed(_)), "group 1000 does not exist yet");
    // Thousands at once: each core of each node gets its share in one
    // pipelined burst and makes them durable together.
    let created: Vec<u64> = (1000..3000).collect();
    let outcomes = client.create_groups(&created);
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok(Reply::Done)), "{:?}", outcomes.iter().find(|o| **o != Outcome::Ok(Reply::Done)));
    assert!((1..=3).all(|id| c.metrics(id).groups_created >= created.len() as u64));
    expect_done(client.create_group(1000), "creating twice is fine");
    for g in created.iter().copied().step_by(10).chain([1001, 1199]) {
        expect_done(client.put(g, "k", value(g, 1)), "write to a new group");
    }
    expect_done(client.delete_group(1001), "delete");
    c.restart_all();
    let mut client = c.client();
    assert_eq!(client.get(1000, "k"), Outcome::Ok(Reply::Value(Some(value(1000, 1)))));
    assert_eq!(client.get(1199, "k"), Outcome::Ok(Reply::Value(Some(value(1199, 1)))));
    assert!(matches!(client.get(1001, "k"), Outcome::Failed(_)), "a deleted group stays deleted");
    // A group created and never written comes back too.
    expect_done(client.create_group(5000), "create");
    for id in 1..=3 {
        c.kill(id);
        c.restart(id);
    }
    let mut client = c.client();
    expect_done(client.put(5000, "k", "v"), "the empty group survived restarts");
    // Thousands deleted at once: one tombstone sync and one WAL write per
    // core and burst.
    let outcomes = client.delete_groups(&created[1000..]);
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok(Reply::Done)), "{:?}", outcomes.iter().find(|o| **o != Outcome::Ok(Reply::Done)));
    assert!(matches!(client.get(2999, "k"), Outcome::Failed(_)), "deleted at once");
    assert_eq!(client.get(1999, "k"), Outcome::Ok(Reply::Value(None)), "the groups before them stay");
    expect_done(client.put(2, "k", "v"), "configured groups are still there");
    // Deleting a group no node has (again) writes nothing; it is answered
    // even by cores that have nothing else to do.
    // Per node: readies, leader stepdowns, peers counted silent, groups at
    // rest; shown if the cores never go idle.
    let activity = |c: &TestCluster| (1..=3).map(|id| c.metrics(id)).map(|m| (m.readies, m.leader_stepdowns, m.peers_silent, m.quiesced_groups)).collect::<Vec<_>>();
    let started = std::time::Instant::now();
    loop {
        let before = activity(&c);
        std::thread::sleep(Duration::from_millis(500));
        let after = activity(&c);
        if before.iter().zip(&after).all(|(a, b)| a.0 == b.0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the cores never went idle for 500 ms in 30 s: (readies, stepdowns, silent peers, groups at rest) per node went from {before:?} to {after:?}");
    }
    expect_done(client.delete_group(1001), "deleting a deleted group on idle cores");
}

/// Creations and deletions reach a node that missed them. A group created
/// while node 3 was down is created there when its leader first writes to
/// it after the restart, and catches up; one deleted meanwhile is deleted
/// there once its replica's first message is answered that way; one
/// deleted through node 1 alone is deleted by the others when node 1's
/// next frames tell them. A deleted group's id is refused for good.
#[test]
fn group_creations_and_deletions_reach_a_node_that_missed_them() {
    let mut c = TestCluster::start(4, 2);
    let mut client = c.client();
    expect_done(client.create_group(900), "create");
    expect_done(client.put(900, "k", value(900, 1)), "a write to the new group");
    c.kill(3);
    let mut client = c.client();
    expect_done(client.create_group(901), "a create that nodes 1 and 2 take, a majority");
    expect_done(client.put(901, "k", value(901, 1)), "a write to it without node 3");
    expect_done(client.delete_group(900), "a delete that nodes 1 and 2 take");
    c.restart(3);
    eventually(Duration::from_secs(20), "node 3 has group 901 and its write", || stale_get(&c, 3, 901, "k") == Outcome::Ok(Reply::Value(Some(value(901, 1)))));
    assert!(c.metrics(3).groups_created_by_peers >= 1, "{:?}", c.metrics(3));
    let gone = |c: &TestCluster, node: u64, group: u64| matches!(stale_get(c, node, group, "k"), Outcome::Failed(why) if why.contains("does not exist"));
    eventually(Duration::from_secs(20), "node 3 deletes group 900", || gone(&c, 3, 900));
    expect_done(c.client_of(1).delete_group(901), "a delete through node 1 alone");
    eventually(Duration::from_secs(10), "nodes 2 and 3 delete group 901", || gone(&c, 2, 901) && gone(&c, 3, 901));
    // Node 3 serves on new client ports since its restart.
    let mut client = c.client();
    let again = client.create_group(900);
    assert!(matches!(&again, Outcome::Failed(why) if why.contains("not used again")), "{again:?}");
    expect_done(client.put(1, "k", "v"), "the other groups serve");
}

/// A deletion notice lost with its frame (node 1's link to node 3 is cut,
/// so node 1 drops what it would send there) still reaches node 3, whose
/// replica rests under a leader that is not node 1 and so sends nothing
/// that would be answered with one: deletions are told again for a while.
/// (Only counters are read meanwhile: a request would wake the replica.)
#[test]
fn a_lost_deletion_notice_is_told_again() {
    let groups = 8;
    let c = TestCluster::start_relayed(groups, 2, |_| {});
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    let group = (1..=groups).find(|&g| client.leader_of(g).is_some_and(|l| l != 1)).expect("a group led by node 2 or 3");
    c.wait_all_at_rest(groups);
    c.relays[&(1, 3)].break_with(Break::Cut);
    expect_done(c.client_of(1).delete_group(group), "a delete through node 1 alone");
    eventually(Duration::from_secs(10), "node 2 deletes the group", || c.metrics(2).groups_deleted == 1);
    c.relays[&(1, 3)].mend();
    eventually(Duration::from_secs(10), "node 3 deletes the group", || c.metrics(3).groups_deleted == 1);
    assert!(matches!(stale_get(&c, 3, group, "k"), Outcome::Failed(why) if why.contains("does not exist")));
}

/// Segment files in every core's WAL of node `id`.
fn wal_segments(c: &TestCluster, id: u64) -> usize {
    let node_dir = c.dir.path().join(format!("node-{id}"));
    let mut count = 0;
    for core in std::fs::read_dir(node_dir).unwrap() {
        let wal_dir = core.unwrap().path().join("wal");
        for f in std::fs::read_dir(wal_dir).unwrap() {
            let name = f.unwrap().file_name();
            count += usize::from(name.to_str().and_then(engine::wal::format::parse_segment_file_name).is_some());
        }
    }
    count
}

#[test]
fn idle_groups_are_copied_forward_so_old_wal_segments_go() {
    // Test nodes: 1 MiB segments, rewrites past 4 of them, compaction every
    // 64 entries. Groups 2..=8 write once and then idle (never compact), so
    // without the copy they would pin the first segment for ever.
    let groups = 8;
    let mut c = TestCluster::start(groups, 1);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "idle", 0, "put to every group");
    let big = |i: u64| Bytes::from(format!("{i:06}-").repeat(16 << 10 >> 7 << 4));
    for i in 0..480u64 {
        expect_done(client.put(1, format!("k{}", i % 32), big(i)), "big put to group 1");
    }
    for id in 1..=3 {
        eventually(Duration::from_secs(20), "old segments deleted", || wal_segments(&c, id) <= 6);
    }
    c.restart_all();
    let mut client = c.client();
    for g in 1..=groups {
        assert_eq!(client.get(g, "idle"), Outcome::Ok(Reply::Value(Some(value(g, 0)))), "group {g}");
    }
    for i in 448..480u64 {
        assert_eq!(client.get(1, format!("k{}", i % 32)), Outcome::Ok(Reply::Value(Some(big(i)))));
    }
    for id in 1..=3 {
        eventually(Duration::from_secs(10), "every replica applied group 2", || stale_get(&c, id, 2, "idle") == Outcome::Ok(Reply::Value(Some(value(2, 0)))));
    }
}

#[test]
fn large_entries_are_split_across_wal_records_and_oversized_ones_refused() {
    // Test nodes have 1 MiB segments: a WAL record is split at 256 KiB, and
    // an entry may hold a little less than that.
    let mut c = TestCluster::start(2, 1);
    let mut client = c.client();
    expect_done(client.put(1, "warm", "up"), "first write");
    match client.put(1, "huge", Bytes::from(vec![7u8; 300 << 10])) {
        Outcome::Failed(e) => assert!(e.contains("exceeds"), "{e}"),
        other => panic!("a 300 KiB value must be refused: {other:?}"),
    }
    // 16 writers of 200 KiB values to one group: one loop iteration gathers
    // more than a segment of entries for it, which must go out as several
    // records (one record larger than a segment would stop the core).
    let map = c.map();
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let map = map.clone();
            std::thread::spawn(move || {
                let mut client = engine::client::Client::new(map, Default::default());
                for i in 0..6u64 {
                    let value = Bytes::from(vec![(w * 16 + i) as u8; 200 << 10]);
                    expect_done(client.put(1, format!("w{w}-{i}"), value), "200 KiB put");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    c.restart_all();
    let mut client = c.client();
    for w in 0..16u64 {
        for i in 0..6u64 {
            assert_eq!(client.get(1, format!("w{w}-{i}")), Outcome::Ok(Reply::Value(Some(Bytes::from(vec![(w * 16 + i) as u8; 200 << 10])))));
        }
    }
}

/// A client that sends its requests and closes its sending half still gets
/// every answer before the server closes the connection.
#[test]
fn a_client_that_half_closes_gets_every_answer() {
    use engine::client::proto::{self, Request};
    use engine::framing::Decoded;
    use std::io::{Read, Write};
    let c = TestCluster::start(1, 1);
    let mut client = c.client();
    expect_done(client.put(1, "warm", "up"), "first write");
    let leader = client.leader_of(1).expect("a leader answered");
    let mut s = std::net::TcpStream::connect(c.client_addrs[&leader][0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    proto::encode_client_hello(&mut out);
    let requests = 50u64;
    for id in 0..requests {
        let op = Op::Put { key: Bytes::from(format!("h{id}")), value: value(1, id) };
        proto::encode_request(&Request { id, group: 1, op }, &mut out);
    }
    s.write_all(&out).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("the server closes after answering");
    let Decoded::Frame(_, mut at) = proto::decode_server_hello(&got).unwrap() else { panic!("no server hello") };
    let mut answered = 0;
    while let Decoded::Frame(response, used) = proto::decode_response(&got[at..]).unwrap() {
        assert_eq!(response.reply, Reply::Done, "request {}", response.id);
        answered += 1;
        at += used;
    }
    assert_eq!((answered, at), (requests, got.len()));
}

/// A write that commits just before a leader's last quiet tick: the leader
/// must not go to rest before its followers learn that commit, or they,
/// unable to rest with a commit outstanding, campaign once their election
/// timeout passes and depose it (a write then in flight may end unknown).
/// Each group gets a second write 3 to 4 ticks after its first and then
/// nothing, so for many of them the second lands in that window.
#[test]
fn a_write_just_before_quiescence_deposes_no_leader() {
    let groups = 64;
    let c = TestCluster::start(groups, 1);
    let mut client = c.client();
    for g in 1..=groups {
        expect_done(client.put(g, "warm", "up"), "first write");
    }
    // Let every group go to rest first.
    std::thread::sleep(Duration::from_millis(1000));
    let stepdowns = |c: &TestCluster| (1..=3).map(|id| c.metrics(id).leader_stepdowns).sum::<u64>();
    let before = stepdowns(&c);
    // Tests tick every 50 ms; eight batches of eight groups, their gaps
    // spread over 150–200 ms.
    for (batch, gap_ms) in (0..8u64).zip((150..200).step_by(7)) {
        let batch_groups = batch * 8 + 1..=batch * 8 + 8;
        for g in batch_groups.clone() {
            expect_done(client.put(g, "a", value(g, 1)), "first write of the pair");
        }
        std::thread::sleep(Duration::from_millis(gap_ms));
        for g in batch_groups {
            expect_done(client.put(g, "b", value(g, 2)), "second write of the pair");
        }
    }
    // More than an election timeout (10 to 20 ticks) for a follower left behind.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stepdowns(&c), before, "leaders were deposed although every node stayed up");
}

/// Node `x`, leader of group 1, loses its peers (`how`) while every group
/// rests. The others elect leaders for the groups `x` led and take writes;
/// `x` serves no linearizable read meanwhile. Once the network heals, `x`
/// catches up every group (group 1 by snapshot: the others compacted past
/// what `x` has) and deposes no leader: pre-vote keeps its term where it was.
fn a_partitioned_node_catches_up_and_deposes_no_leader(how: Break) {
    let groups = 24;
    let c = TestCluster::start_relayed(groups, 2, |_| {});
    let leaders = |c: &TestCluster| (1..=3).map(|id| c.metrics(id).leaders).sum::<u64>();
    eventually(Duration::from_secs(30), "a leader for every group", || leaders(&c) == groups);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "put before the partition");
    let x = client.leader_of(1).expect("group 1 answered");
    let others: Vec<u64> = (1..=3).filter(|&id| id != x).collect();
    c.wait_all_at_rest(groups);
    // Resting groups send nothing; the links' keepalives show that every
    // node is still there (the silence timeout is 20 ticks: 1 s in tests).
    std::thread::sleep(Duration::from_millis(1500));
    let silent = |c: &TestCluster, ids: &[u64]| ids.iter().map(|&id| c.metrics(id).peers_silent).sum::<u64>();
    assert_eq!(silent(&c, &[1, 2, 3]), 0, "an idle peer counted lost");

    c.partition(x, how);
    // Past the compaction interval (64 entries in tests).
    let mut acked = Vec::new();
    let started = std::time::Instant::now();
    for i in 1..=150u64 {
        assert!(started.elapsed() < Duration::from_secs(60), "group 1 without node {x}: only {} writes acknowledged in 60 s", acked.len());
        match client.put(1, format!("k{i}"), value(1, i)) {
            Outcome::Ok(Reply::Done) => acked.push(i),
            Outcome::Unknown(_) | Outcome::Failed(_) => {}
            other => panic!("write {i}: {other:?}"),
        }
    }
    assert!(acked.len() >= 100, "group 1 took writes without node {x}: {} of 150 acknowledged", acked.len());
    if how == Break::BlackHole {
        // Only the silence told them.
        assert!(silent(&c, &others) > 0, "the others counted node {x} lost");
    }
    // A write may end unknown while its leader is cut off; written again it
    // is the same write.
    for g in 2..=groups {
        let mut tries = 0;
        while client.put(g, "after", value(g, 1)) != Outcome::Ok(Reply::Done) {
            tries += 1;
            assert!(tries < 5, "group {g} took no write without node {x}");
        }
    }
    // Check-quorum ended its leaderships: it counts none while cut off.
    eventually(Duration::from_secs(10), "node x, cut off, leads no group", || c.metrics(x).leaders == 0);
    let stale = c.client_of(x).call(1, Op::Get { key: Bytes::from("k150"), consistency: Consistency::Linearizable });
    assert!(!matches!(stale, Outcome::Ok(_)), "node {x}, cut off, answered a linearizable read: {stale:?}");
    let stepdowns = |c: &TestCluster| others.iter().map(|&id| c.metrics(id).leader_stepdowns).sum::<u64>();
    // Leaderships the others hand back to it (leader balancing) are the
    // only stepdowns allowed.
    let handed = |c: &TestCluster| others.iter().map(|&id| c.metrics(id).leaders_balanced).sum::<u64>();
    let (stepdowns_before, handed_before) = (stepdowns(&c), handed(&c));

    c.heal();
    let last = *acked.last().unwrap();
    eventually(Duration::from_secs(30), "node x caught up every group", || {
        stale_get(&c, x, 1, &format!("k{last}")) == Outcome::Ok(Reply::Value(Some(value(1, last))))
            && (2..=groups).all(|g| stale_get(&c, x, g, "after") == Outcome::Ok(Reply::Value(Some(value(g, 1)))))
    });
    assert!(c.metrics(x).snapshots_installed > 0, "node {x} caught up group 1 by snapshot: {:?}", c.metrics(x));
    // More than an election timeout (10 to 20 ticks of 50 ms) after it rejoined.
    std::thread::sleep(Duration::from_millis(1500));
    let (deposed, handed) = (stepdowns(&c) - stepdowns_before, handed(&c) - handed_before);
    assert!(deposed <= handed, "node {x} deposed leaders when it rejoined: {deposed} stepdowns, {handed} leaderships handed to it");
    assert_eq!(leaders(&c), groups);
    for i in acked {
        assert_eq!(client.get(1, format!("k{i}")), Outcome::Ok(Reply::Value(Some(value(1, i)))), "acknowledged write {i} lost");
    }
}

#[test]
fn a_node_cut_off_catches_up_and_deposes_no_leader() {
    a_partitioned_node_catches_up_and_deposes_no_leader(Break::Cut);
}

/// As above, but nothing tells anyone that the network is gone: no
/// connection closes, bytes just stop arriving.
#[test]
fn a_node_behind_a_black_hole_catches_up_and_deposes_no_leader() {
    a_partitioned_node_catches_up_and_deposes_no_leader(Break::BlackHole);
}

/// A core keeps at most its share of `client_connections_max` client
/// connections open: one more is closed at once, the node goes on, and
/// once some close it takes new clients again.
#[test]
fn client_connections_beyond_the_limit_are_closed_until_some_close() {
    use std::io::Read;
    use std::net::TcpStream;

    let limit = 4;
    let c = TestCluster::start_with(1, 1, |cfg| cfg.client_connections_max = limit);
    let mut client = c.client();
    expect_done(client.put(1, "before", "x"), "write before the flood");
    let leader = client.leader_of(1).expect("a leader answered");
    let addr = c.client_addrs[&leader][0];
    // Held connections block a read; a refused one ends at once.
    let refused = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        matches!(s.read(&mut [0u8; 16]), Ok(0))
    };
    let mut held = Vec::new();
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        if refused(&mut s) {
            break;
        }
        held.push(s);
        assert!(held.len() <= limit as usize, "more than {limit} client connections open on node {leader}");
    }
    let m = c.metrics(leader);
    assert_eq!(m.client_connections, u64::from(limit), "{m:?}");
    assert!(m.client_connections_refused > 0, "{m:?}");
    // The connection the client had is among those held: it still works.
    expect_done(client.put(1, "during", "y"), "write on a connection opened before the flood");
    drop(held);
    eventually(Duration::from_secs(5), "the flood's connections closed", || c.metrics(leader).client_connections < u64::from(limit));
    let mut fresh = c.client();
    assert_eq!(fresh.get(1, "during"), Outcome::Ok(Reply::Value(Some(Bytes::from("y")))));
}

/// A snapshot from the leader that the follower cannot save (here a
/// directory stands where its temporary file goes; a full disk or a process
/// out of file descriptors fails the same way) takes only that group out of
/// service on that node: its other groups go on, and once the obstacle is
/// gone a restart brings the group back and it catches up.
#[test]
fn a_snapshot_that_cannot_be_saved_on_install_sets_aside_only_its_group() {
    let groups = 4;
    let mut c = TestCluster::start(groups, 1);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "put before node 3 stops");
    leave_node_3_behind_in_group_1(&mut c, &mut client, 0, 150);
    let blocker = c.dir.path().join(format!("node-3/core-0/snapshots/g{:016x}.snap.tmp", 1));
    std::fs::create_dir(&blocker).unwrap();
    c.restart(3);
    eventually(Duration::from_secs(20), "node 3 set group 1 aside", || c.metrics(3).groups_set_aside == 1);
    // Node 3 still serves its other groups, and takes part in their writes
    // (a new client: node 3's client port changed with the restart).
    let mut client = c.client();
    for g in 2..=groups {
        expect_done(client.put(g, "after", value(g, 1)), "put with group 1 set aside on node 3");
        eventually(Duration::from_secs(10), "node 3 applied it", || stale_get(&c, 3, g, "after") == Outcome::Ok(Reply::Value(Some(value(g, 1)))));
    }
    std::fs::remove_dir(&blocker).unwrap();
    c.kill(3);
    c.restart(3);
    eventually(Duration::from_secs(20), "node 3 caught up group 1", || stale_get(&c, 3, 1, "k149") == Outcome::Ok(Reply::Value(Some(value(1, 149)))));
    assert!(c.metrics(3).snapshots_installed > 0, "{:?}", c.metrics(3));
}

/// A node drained before it stops hands every group it leads to another
/// node: it ends up leading none while writes keep flowing into every
/// group, no write in flight at a handed-over leader ends without a
/// definite answer (it stays waiting at the old leader until its index is
/// applied there), and once the node is gone every group takes writes.
#[test]
fn a_drained_node_hands_over_every_leadership_and_leaves_no_write_unanswered() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let groups = 300;
    let mut c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "warm", 0, "a write in every group");
    let (drained, led) = c.busiest_node();
    assert!(led > 0, "node {drained} leads no group");

    let stepdowns = |c: &TestCluster| -> Vec<u64> { (1..=3).map(|id| c.metrics(id).leader_stepdowns).collect() };
    let stepdowns_before = stepdowns(&c);
    let writing = AtomicBool::new(true);
    let (acked, unknown) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..6u64)
            .map(|w| {
                let (mut client, writing) = (c.client(), &writing);
                s.spawn(move || {
                    let (mut acked, mut unknown) = (Vec::new(), Vec::new());
                    let mut i = 0u64;
                    while writing.load(Ordering::Relaxed) || i < 50 {
                        let g = 1 + (w * 53 + i * 7) % groups;
                        match client.put(g, format!("d{w}-{i}"), value(g, i)) {
                            Outcome::Ok(Reply::Done) => acked.push((g, w, i)),
                            Outcome::Unknown(why) => unknown.push(format!("group {g}, write {w}-{i}: {why}")),
                            other => panic!("group {g}, write {w}-{i}: {other:?}"),
                        }
                        i += 1;
                    }
                    (acked, unknown)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let left = c.nodes[&drained].drain_and_wait(drained, Duration::from_secs(20));
        assert_eq!(left, 0, "node {drained} still leads {left} of its {led} groups");
        // As before a stop: its clients are told, and it answers what they sent.
        let waiting = c.nodes[&drained].close_clients_and_wait(drained, Duration::from_secs(20));
        assert_eq!(waiting, 0, "node {drained} still has requests of its clients to answer");
        std::thread::sleep(Duration::from_millis(300));
        writing.store(false, Ordering::Relaxed);
        writers.into_iter().map(|w| w.join().expect("writer")).fold((Vec::new(), Vec::new()), |(mut a, mut u), (wa, wu)| {
            a.extend(wa);
            u.extend(wu);
            (a, u)
        })
    });
    // Leaderships that changed beyond the drain's (an election on a loaded
    // machine) may end a write unknown, as they must; the drain's do not.
    let changes: Vec<u64> = stepdowns(&c).iter().zip(&stepdowns_before).map(|(after, before)| after - before).collect();
    let only_the_drain = (1..=3).all(|id| changes[id as usize - 1] == if id == drained { led } else { 0 });
    if only_the_drain {
        assert!(unknown.is_empty(), "{} writes ended unknown: {unknown:?}", unknown.len());
    } else {
        eprintln!("leaderships changed beyond the drain (stepdowns by node: {changes:?}, node {drained} led {led}); {} writes ended unknown", unknown.len());
    }
    let started = c.metrics(drained).leader_transfers_started;
    assert!(started >= led, "node {drained} led {led} groups but started {started} transfers");
    let others: u64 = (1..=3).filter(|&id| id != drained).map(|id| c.metrics(id).leaders).sum();
    assert_eq!(others, groups, "the other nodes lead every group");

    c.kill(drained);
    // Only the survivors: the dead node's ports may be taken by another test by now.
    c.client_addrs.remove(&drained);
    let mut after = c.client();
    put_in_every_group(&mut after, groups, "after", 1, "a write in every group once the drained node is gone");
    for (g, w, i) in acked {
        assert_eq!(after.get(g, format!("d{w}-{i}")), Outcome::Ok(Reply::Value(Some(value(g, i)))), "acknowledged write {w}-{i} to group {g} lost");
    }
}

/// Leaderships at rest on a node cut off from its peers end: losing its
/// quorum wakes them, and a leader without a quorum of reachable voters no
/// longer rests, so check-quorum deposes it (before, the node counted them
/// until the partition healed).
#[test]
fn a_cut_off_node_ends_its_resting_leaderships() {
    let (c, x, _) = cut_off_node_at_rest();
    eventually(Duration::from_secs(10), "check-quorum deposes node x's leaderships", || c.metrics(x).leaders == 0);
}

/// A draining node whose leaderships no one can take (its peers are cut
/// off) stops waiting once every core found no taker, instead of for the
/// whole drain time (a node alone stops at once): it returns still leading
/// every one, well within the election timeout after which check-quorum
/// ends them.
#[test]
fn a_drain_with_no_taker_ends_without_waiting_out_its_time() {
    let (c, x, led) = cut_off_node_at_rest();
    let left = c.nodes[&x].drain_and_wait(x, Duration::from_secs(30));
    assert_eq!(left, led, "node {x} waited for its leaderships to end instead of seeing that no one could take them");
    assert!(c.metrics(x).leaderships_without_transfer_target > 0);
    eventually(Duration::from_secs(10), "check-quorum deposes node x's leaderships", || c.metrics(x).leaders == 0);
}

/// A cluster whose groups all rest, with the node leading the most of them
/// (returned, with that count) just cut off from its peers.
fn cut_off_node_at_rest() -> (TestCluster, u64, u64) {
    let groups = 24;
    let c = TestCluster::start_relayed(groups, 2, |_| {});
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    c.wait_all_at_rest(groups);
    let (x, led) = c.busiest_node();
    assert!(led > 0, "node {x} leads no group");
    c.partition(x, Break::Cut);
    eventually(Duration::from_secs(10), "node x lost its peers", || c.metrics(x).peer_connections == 0);
    (c, x, led)
}

/// A node drained without stopping leads nothing for as long as it drains
/// (a leadership it wins is handed over again), and after `undrain`
/// balancing gives it its share back.
#[test]
fn an_undrained_node_gets_its_share_of_leaderships_back() {
    let groups = 120;
    let c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    let x = c.drain_busiest_node();
    assert_eq!(c.metrics(x).cores_draining, 2);
    let stepdowns_before = c.metrics(x).leader_stepdowns;
    put_in_every_group(&mut client, groups, "k", 1, "a write in every group while node x drains");
    std::thread::sleep(Duration::from_secs(3));
    // The others know from its frames that it drains: they hand it nothing
    // (which it would hand back at once, round after round).
    assert_eq!((c.metrics(x).leaders, c.metrics(x).leader_stepdowns), (0, stepdowns_before), "node {x} led nothing while it drained");
    c.nodes[&x].undrain(x);
    let share = groups / 3;
    eventually(Duration::from_secs(60), "node x leads its share again", || c.metrics(x).leaders >= share * 9 / 10);
    assert_eq!(c.metrics(x).cores_draining, 0);
    put_in_every_group(&mut client, groups, "k", 2, "a write in every group once balanced");
}

/// The embedded API, from threads of the process that runs the nodes: a
/// proposal at the leader is applied, a follower names the leader instead,
/// reads are linearizable at the leader and at a follower and stale at any
/// replica, requests for a group reach the core that owns it, and a node
/// that stopped refuses at once what it never took.
#[test]
fn the_embedded_api_proposes_and_reads_without_a_socket() {
    let groups = 8;
    let mut c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    let t = Duration::from_secs(10);
    let handles: Vec<_> = (1..=3).map(|id| c.nodes[&id].node(id).expect("the node runs here")).collect();
    assert!(c.nodes[&1].node(2).is_none(), "node 2 runs in another cluster handle");
    for group in 1..=groups {
        let put = Op::Put { key: Bytes::from_static(b"embedded"), value: value(group, 1) };
        let answers: Vec<Outcome> = handles.iter().map(|h| h.propose(group, put.clone(), t)).collect();
        let leader = 1 + answers.iter().position(|a| *a == Outcome::Ok(Reply::Done)).unwrap_or_else(|| panic!("group {group}: no node took the write: {answers:?}")) as u64;
        for (id, answer) in (1..=3u64).zip(&answers).filter(|&(id, _)| id != leader) {
            assert_eq!(*answer, Outcome::Ok(Reply::NotLeader { leader }), "group {group}: node {id} did not send the write to its leader");
        }
        let follower = &handles[(leader % 3) as usize];
        for h in [&handles[leader as usize - 1], follower] {
            let read = h.read(group, "embedded", Consistency::Linearizable, t);
            assert_eq!(read, Outcome::Ok(Reply::Value(Some(value(group, 1)))), "group {group}: linearizable read at node {}", h.node_id());
        }
        // The follower above has applied it: a linearizable read waits for that.
        assert_eq!(follower.read(group, "embedded", Consistency::Stale, t), Outcome::Ok(Reply::Value(Some(value(group, 1)))));
    }
    assert_eq!(handles[0].propose(groups + 1, Op::Delete { key: Bytes::from_static(b"k") }, t), Outcome::Ok(Reply::UnknownGroup));
    assert!(matches!(handles[0].propose(1, Op::Get { key: Bytes::from_static(b"k"), consistency: Consistency::Stale }, t), Outcome::Failed(_)), "propose takes writes only");
    match handles[2].call(1, Op::Metrics, t) {
        Outcome::Ok(Reply::Value(Some(json))) => assert!(String::from_utf8_lossy(&json).contains("\"leaders\""), "{json:?}"),
        other => panic!("metrics: {other:?}"),
    }
    c.kill(3);
    let refused = handles[2].propose(1, Op::Put { key: Bytes::from_static(b"late"), value: value(1, 2) }, t);
    assert!(matches!(refused, Outcome::Failed(ref why) if why.contains("stopped")), "a stopped node's handle: {refused:?}");
}

/// A node that crashes and is back before its peers' election timeout runs
/// out: every group it led gets a leader again. Before, their followers
/// rested again under the leader they knew, whose node was reachable again
/// but no longer led, and refused its pre-votes: no leader, ever.
#[test]
fn groups_led_by_a_node_back_at_once_get_a_leader_again() {
    let groups = 16;
    let mut c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    c.wait_all_at_rest(groups);
    let (x, led) = c.busiest_node();
    assert!(led > 0, "node {x} leads no group");
    c.kill(x);
    c.restart(x);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 1, "a write in every group once node x is back");
}

/// A client connection that never says hello is closed after
/// `client_hello_timeout_ms` (here 200 ms; 10 s by default), and gives its
/// place back.
#[test]
fn a_client_that_never_says_hello_is_closed_after_the_hello_timeout() {
    use std::io::Read;
    let c = TestCluster::start_with(2, 1, |cfg| cfg.client_hello_timeout_ms = 200);
    let mut silent = std::net::TcpStream::connect(c.client_addrs[&1][0]).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the node kept a silent connection open: {other:?}"),
    }
    eventually(Duration::from_secs(5), "its place given back", || c.metrics(1).client_connections == 0);
}

/// A drain kept on (the client's `Drain`) finds the leaderships that rested
/// when it began and hands them over; once every group rests again its
/// ticks visit only the awake groups, not all of them every tick.
#[test]
fn a_drain_kept_on_hands_over_resting_leaderships_then_visits_only_awake_groups() {
    let groups = 120;
    let c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    c.wait_all_at_rest(groups);
    let x = c.drain_busiest_node();
    // 20 ticks of 50 ms, on each of 2 cores: a walk of every group each
    // time would be 20 times the groups. Groups can wake meanwhile (the
    // other two nodes balance their leaderships between them, a loaded
    // machine counts a peer silent): then node x's replicas take readies,
    // and the second is measured again.
    let calm = |c: &TestCluster| c.metrics(x).readies;
    let mut tries = 0;
    let (visited, readies) = loop {
        c.wait_all_at_rest(groups);
        let (visited_before, calm_before) = (c.metrics(x).drain_groups_visited, calm(&c));
        std::thread::sleep(Duration::from_secs(1));
        let visited = c.metrics(x).drain_groups_visited - visited_before;
        tries += 1;
        if (c.all_at_rest(groups) && calm(&c) == calm_before) || tries == 10 {
            break (visited, calm(&c) - calm_before);
        }
    };
    assert!(visited < groups, "node {x}'s drain ticks visited {visited} groups in a second while every group rested ({readies} readies in it, try {tries})");
    assert_eq!(c.metrics(x).leaders, 0, "node {x} took a leadership while it drained");
    put_in_every_group(&mut client, groups, "k", 1, "a write in every group while node x drains");
}

/// A node drained and restarted leads nothing, and elections alone would
/// never give it a share back: the others hand it leaderships until each
/// leads about a third of the groups, and every group keeps taking writes.
#[test]
fn a_restarted_node_gets_its_share_of_leaderships_back() {
    let groups = 240;
    let mut c = TestCluster::start(groups, 2);
    let mut client = c.client();
    put_in_every_group(&mut client, groups, "k", 0, "a write in every group");
    let x = c.drain_busiest_node();
    c.kill(x);
    c.restart(x);
    let share = groups / 3;
    eventually(Duration::from_secs(60), "node x leads its share again", || c.metrics(x).leaders >= share * 9 / 10);
    let balanced: u64 = (1..=3).map(|id| c.metrics(id).leaders_balanced).sum();
    assert!(balanced >= share * 9 / 10, "the others handed node {x} its leaderships ({balanced} transfers)");
    // Nobody is pushed past its share, so nothing moves back.
    std::thread::sleep(Duration::from_secs(3));
    for id in 1..=3 {
        let leads = c.metrics(id).leaders;
        assert!(leads <= share + share / 10 + 4, "node {id} leads {leads} of {groups} groups");
    }
    let mut after = c.client();
    put_in_every_group(&mut after, groups, "k", 1, "a write in every group once balanced");
}
