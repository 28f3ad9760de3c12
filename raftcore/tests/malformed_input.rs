//! Messages no correct peer sends reach `RawNode::step` only through a bug
//! or a damaged peer; they must leave the log and the commit as they were,
//! without a panic.

mod scenario_net;

use raftcore::{ConfState, LogIndex, Message, MessageBody, NodeId, Role, SnapshotMeta, Term};
use scenario_net::{config, nid, no_lease_config, Net};

#[test]
fn a_follower_drops_appends_with_gaps_or_future_terms() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let before = net.log_terms(2);
    let mut turn = 0;
    net.set_filter(move |m| {
        if m.to == nid(2) {
            if let MessageBody::Append { entries, .. } = &mut m.body {
                if let Some(last) = entries.last_mut() {
                    turn += 1;
                    if turn % 2 == 1 {
                        last.index = LogIndex(last.index.0 + 5);
                    } else {
                        last.term = Term(last.term.0 + 1);
                    }
                }
            }
        }
        true
    });
    net.propose(1, "a");
    net.stabilize();
    net.propose(1, "b");
    net.stabilize();
    assert_eq!(net.log_terms(2), before, "node 2 stored a malformed append");
    assert_eq!(net.committed(1), LogIndex(4), "nodes 1 and 3 commit without node 2");

    net.clear_filter();
    net.propose(1, "c");
    let caught_up = net.tick_until(3 * net.timeout_ticks(1), |net| net.log_terms(2) == net.log_terms(1));
    assert!(caught_up.is_some(), "node 2 never caught up once the appends were sound: {}", net.dump());
}

#[test]
fn a_leader_ignores_acknowledgements_beyond_its_log() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    net.set_filter(|m| {
        if m.to == nid(1) {
            match &mut m.body {
                MessageBody::AppendResponse { index, reject: None } => *index = LogIndex(index.0 + 100),
                MessageBody::SnapshotResponse { index, done: true, .. } => *index = LogIndex(index.0 + 100),
                _ => {}
            }
        }
        true
    });
    net.propose(1, "a");
    net.stabilize();
    assert_eq!(net.committed(1), LogIndex(2), "nothing commits on acknowledgements of entries the leader never had");

    net.clear_filter();
    net.propose(1, "b");
    let caught_up = net.tick_until(3 * net.timeout_ticks(1), |net| net.committed(1) == LogIndex(4) && net.sm(2) == net.sm(1) && net.sm(1).len() == 2);
    assert!(caught_up.is_some(), "the group never recovered: {}", net.dump());
}

fn msg(from: u64, to: u64, term: Term, body: MessageBody) -> Message {
    Message { from: nid(from), to: nid(to), term, body }
}

/// A term near `u64::MAX` would overflow the next campaign; such a message
/// is dropped and the group goes on electing in its own terms.
#[test]
fn a_term_beyond_the_maximum_is_dropped() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let term = net.term(2);
    for body in [MessageBody::TimeoutNow, MessageBody::HeartbeatResponse { round: 1 }] {
        net.raw_mut(2).step(msg(3, 2, Term(u64::MAX), body));
    }
    assert_eq!(net.term(2), term);
    net.propose(1, "a");
    net.settle();
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, term));
    assert_eq!(net.committed(2), net.committed(1));
}

/// A snapshot whose membership raftcore could not have produced (node id 0,
/// a node both voter and learner) is dropped before it is installed.
#[test]
fn a_snapshot_with_a_broken_membership_is_dropped() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let (term, committed) = (net.term(1), net.committed(2));
    for conf_state in [
        ConfState { voters: vec![nid(1), nid(2), NodeId(0)], ..Default::default() },
        ConfState { voters: vec![nid(1), nid(2), nid(3)], learners: vec![nid(3)], ..Default::default() },
    ] {
        let meta = Box::new(SnapshotMeta { index: LogIndex(50), term, conf_state });
        net.raw_mut(2).step(msg(1, 2, term, MessageBody::SnapshotChunk { meta, offset: 0, data: Default::default(), last: true }));
        net.stabilize();
        assert_eq!(net.committed(2), committed, "node 2 installed a snapshot with a broken membership");
    }
    net.propose(1, "a");
    net.settle();
    assert_eq!(net.sm(2), vec!["a".to_string()]);
}

/// A heartbeat answer for a round the leader has not sent would confirm
/// every later read without a quorum; it is ignored.
#[test]
fn an_answer_to_a_future_heartbeat_round_confirms_no_read() {
    let mut net = Net::with_entry(&[1, 2, 3], no_lease_config, "a");
    let term = net.term(1);
    net.raw_mut(1).step(msg(2, 1, term, MessageBody::HeartbeatResponse { round: u64::MAX }));
    net.isolate(1);
    net.raw_mut(1).read_index(5).unwrap();
    net.ticks(3);
    assert!(net.node(1).read_states.is_empty(), "an isolated leader answered a read");
}

/// Only the leader hands over leadership and answers a follower's reads.
#[test]
fn timeout_now_and_read_answers_count_only_from_the_leader() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let term = net.term(2);
    net.raw_mut(2).step(msg(3, 2, term, MessageBody::TimeoutNow));
    net.stabilize();
    assert_eq!((net.leader(), net.term(2)), (Some(1), term), "a follower's TimeoutNow started a campaign");

    net.raw_mut(2).read_index(9).unwrap();
    net.raw_mut(2).step(msg(3, 2, term, MessageBody::ReadIndexResponse { request_id: 9, index: LogIndex(0) }));
    assert!(net.ready(2).read_states.is_empty(), "a read answered by a follower");
}
