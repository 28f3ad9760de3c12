//! Messages no correct peer sends reach `RawNode::step` only through a bug
//! or a damaged peer; they must leave the log and the commit as they were,
//! without a panic.

mod scenario_net;

use raftcore::{LogIndex, MessageBody, Term};
use scenario_net::{config, nid, Net};

fn timeout_ticks(net: &Net) -> u32 {
    net.node(1).cfg.election_timeout_ticks
}

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
    let caught_up = net.tick_until(3 * timeout_ticks(&net), |net| net.log_terms(2) == net.log_terms(1));
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
    let caught_up = net.tick_until(3 * timeout_ticks(&net), |net| net.committed(1) == LogIndex(4) && net.sm(2) == net.sm(1) && net.sm(1).len() == 2);
    assert!(caught_up.is_some(), "the group never recovered: {}", net.dump());
}
