//! The scenarios of the Raft paper and thesis as named, deterministic
//! scripts: each drives real `RawNode`s through `scenario_net` and asserts
//! the outcome the paper prescribes. Where the paper has a figure or a
//! section, the test names it.

mod scenario_net;

use std::cell::RefCell;
use std::rc::Rc;

use raftcore::{ChangeOp, ConfChange, ConfChangeError, Config, ConfigError, HardState, LogIndex, Message, MessageBody, NodeId, ProposeError, ReadError, ReadState, Role, Term, Transition};
use scenario_net::{change, config, ids, is_append, is_leave_joint_entry, nid, no_lease_config, paper_config, Net};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---- Figure 8: committing entries from earlier terms --------------------------------

/// Figure 8 (a)–(c), five servers, paper configuration. Index 1 is the
/// bootstrap entry and every leader starts its term with an empty entry, so
/// the paper's index 2 is index 3 here.
fn figure8_up_to_c() -> Net {
    let mut net = Net::new(&[1, 2, 3, 4, 5], paper_config);
    net.elect(1);
    assert_eq!((net.term(1), net.committed(1)), (Term(2), LogIndex(2)));

    // (a) S1 leads term 2 and replicates index 3 to S2 only.
    net.cut_from(1, &[3, 4, 5]);
    assert_eq!(net.propose(1, "a"), LogIndex(3));
    net.stabilize();
    assert_eq!(net.term_at(2, 3), Some(Term(2)));
    assert_eq!(net.committed(1), LogIndex(2), "2 of 5 replicas is no quorum");

    // (b) S1 crashes; S5 wins term 3 with S3 and S4 and appends an entry at
    // index 3 that reaches nobody.
    net.crash(1);
    net.heal();
    net.set_filter(|m| !(m.from == nid(5) && is_append(m)));
    net.campaign(5);
    net.stabilize();
    assert_eq!((net.role(5), net.term(5)), (Role::Leader, Term(3)));
    assert_eq!(net.term_at(5, 3), Some(Term(3)));
    assert_eq!(net.term_at(3, 3), None);
    net.crash(5);

    // (c) S1 restarts and wins term 4 (S3 and S4 voted for S5 in term 3, so
    // it takes two campaigns). It replicates its term-2 entry to S3, but its
    // own term-4 entry reaches nobody, and S4 hears nothing.
    net.restart(1);
    net.clear_filter();
    net.campaign(1);
    net.stabilize();
    assert_eq!((net.role(1), net.term(1)), (Role::Candidate, Term(3)));
    net.set_filter(|m| {
        if m.from != nid(1) || !is_append(m) {
            return true;
        }
        if m.to == nid(4) {
            return false;
        }
        if let MessageBody::Append { entries, .. } = &mut m.body {
            entries.retain(|e| e.term < Term(4));
        }
        true
    });
    net.campaign(1);
    net.stabilize();
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, Term(4)));
    assert_eq!(net.term_at(1, 4), Some(Term(4)));
    for n in [1, 2, 3] {
        assert_eq!(net.term_at(n, 3), Some(Term(2)), "S{n} stores the term-2 entry");
    }
    // The hazard: the term-2 entry is on a majority, yet it must not count
    // as committed — a leader commits by counting replicas only entries of
    // its own term (§5.4.2).
    assert_eq!(net.committed(1), LogIndex(2), "S1 committed an earlier term's entry by counting replicas");
    net
}

/// Figure 8 (d): had S1 committed index 3, S5 would now overwrite a
/// committed entry. It does overwrite it, and nobody ever applied it.
#[test]
fn figure8_commit_hazard() {
    let mut net = figure8_up_to_c();
    net.crash(1);
    net.clear_filter();
    net.restart(5);
    // S5's last entry (3, term 3) is more up to date than S2–S4's (3, term 2)
    // and (2, term 2): it wins once its term passes the votes cast for S1.
    for _ in 0..3 {
        if net.role(5) == Role::Leader {
            break;
        }
        net.campaign(5);
        net.stabilize();
    }
    assert_eq!(net.role(5), Role::Leader, "S5 should win with votes from S2, S3 and S4");
    net.tick(5);
    net.stabilize();
    for n in [2, 3, 4, 5] {
        assert_eq!(net.term_at(n, 3), Some(Term(3)), "S{n}: the term-2 entry at index 3 was replaced");
        assert!(net.committed(n) >= LogIndex(4));
        assert!(!net.sm(n).contains(&"a".to_string()), "S{n} applied the overwritten entry");
    }
    // S1 rejoins as a follower and its copy is overwritten too.
    net.restart(1);
    net.ticks(3);
    assert_eq!((net.role(1), net.leader_of(1)), (Role::Follower, 5));
    assert_eq!(net.log_terms(1), net.log_terms(5));
    assert!(net.sm(1).is_empty());
}

/// Figure 8 (e): once S1 commits an entry of its own term on a majority,
/// the earlier entry is committed with it and S5 can no longer win.
#[test]
fn figure8_commit_after_own_term_entry() {
    let mut net = figure8_up_to_c();
    net.clear_filter();
    net.tick(1);
    net.stabilize();
    assert_eq!(net.committed(1), LogIndex(4), "the term-4 entry is on a majority");
    assert_eq!(net.sm(1), strings(&["a"]), "index 3 is committed along with it");
    net.crash(1);
    net.restart(5);
    for _ in 0..4 {
        net.campaign(5);
        net.stabilize();
        assert_ne!(net.role(5), Role::Leader, "S5 lacks the committed entries and must not win");
    }
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.role(2), Role::Leader);
    net.ticks(2);
    for n in [2, 3, 4, 5] {
        assert_eq!(net.term_at(n, 3), Some(Term(2)), "S{n} keeps the committed entry");
        assert_eq!(net.sm(n), strings(&["a"]));
    }
}

// ---- Leaders that fall behind ------------------------------------------------------

/// §5.3: a leader cut off from the cluster keeps accepting proposals (it
/// does not know better without check-quorum); when it rejoins it steps
/// down on the first message of the higher term, and its uncommitted
/// entries are overwritten by the new leader's log.
#[test]
fn stale_leader_rejoining() {
    let mut net = Net::with_entry(&[1, 2, 3], paper_config, "c1");
    let committed = net.committed(1);

    net.isolate(1);
    net.propose(1, "stale-1");
    let stale_last = net.propose(1, "stale-2");
    net.stabilize();
    assert_eq!(net.committed(1), committed);
    assert_eq!(stale_last, committed.plus(2));

    net.campaign(2);
    net.stabilize();
    assert_eq!((net.role(2), net.term(2)), (Role::Leader, Term(3)));
    net.propose(2, "fresh");
    net.settle();
    assert_eq!(net.sm(3), strings(&["c1", "fresh"]));
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, Term(2)), "the isolated leader does not know yet");

    net.heal();
    // The stale leader's own heartbeats (term 2) are ignored; the new
    // leader's heartbeat (term 3) deposes it.
    net.tick_all();
    assert_eq!((net.role(1), net.term(1), net.leader_of(1)), (Role::Follower, Term(3), 2));
    net.ticks(2);
    assert_eq!(net.log_terms(1), net.log_terms(2), "the stale suffix was overwritten");
    assert!(net.log_entries(1).iter().all(|e| !e.data.starts_with(b"stale")));
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n), strings(&["c1", "fresh"]), "node {n}");
    }
    assert_eq!(net.role(2), Role::Leader);
}

/// Two replicas whose election timers run out in the same tick (one in ten
/// at 10..20 ticks) used to split the vote: each granted the other's
/// pre-vote, then voted for itself, and both waited out another timeout (a
/// failover of 351 groups ended with stragglers at 3-5 s). Of two
/// pre-candidates with the same log, only the lower id gets the other's
/// pre-vote, so one election decides it.
#[test]
fn simultaneous_campaigns_with_equal_logs_elect_the_lower_id_at_once() {
    let mut net = Net::with_entry(&[1, 2, 3], config, "c1");
    let term = campaign_at_once_without_node_1(&mut net);
    assert_eq!((net.role(2), net.term(2)), (Role::Leader, term.next()), "{}", net.dump());
    assert_eq!((net.role(3), net.leader_of(3)), (Role::Follower, 2));

    // A longer log still wins over a lower id: 3 holds an entry 2 missed.
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    net.cut_from(1, &[2]);
    net.propose(1, "c1");
    net.stabilize();
    assert!(net.last_index(3) > net.last_index(2));
    let term = campaign_at_once_without_node_1(&mut net);
    assert_eq!((net.role(3), net.term(3)), (Role::Leader, term.next()), "{}", net.dump());
}

/// Cuts the leader, node 1, off, has 3 and then 2 campaign before any
/// message moves, and lets the election run; returns the term they began at.
fn campaign_at_once_without_node_1(net: &mut Net) -> Term {
    net.isolate(1);
    let term = net.term(2);
    assert_eq!(net.term(3), term, "both campaign from one term");
    net.campaign(3);
    net.campaign(2);
    net.stabilize();
    term
}

/// Thesis §9.6: with pre-vote, a partitioned node cannot win a pre-vote, so
/// its term does not grow; when the partition heals it rejoins as a
/// follower and the leader keeps its term and leadership.
#[test]
fn partitioned_candidate_with_prevote_does_not_disturb() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let term = net.term(1);
    net.isolate(3);
    net.propose(1, "while-partitioned");
    let mut tried = false;
    for _ in 0..5 * net.timeout_ticks(3) {
        net.tick_all();
        tried |= net.role(3) == Role::PreCandidate;
        assert_eq!(net.term(3), term, "the isolated node's term grew");
        assert_eq!((net.role(1), net.term(1)), (Role::Leader, term));
    }
    assert!(tried, "the isolated node never tried to campaign");

    net.heal();
    net.ticks(3);
    for n in [1, 2, 3] {
        assert_eq!((net.term(n), net.leader_of(n)), (term, 1), "node {n}");
    }
    assert_eq!(net.role(1), Role::Leader);
    net.propose(1, "after-heal");
    net.settle();
    assert_eq!(net.sm(3), strings(&["while-partitioned", "after-heal"]));
}

/// Thesis §6.2: with check-quorum, a leader that has not heard from a
/// quorum within an election timeout steps down and refuses proposals; the
/// majority elects a new leader and keeps committing.
#[test]
fn check_quorum_leader_steps_down_in_minority() {
    let mut net = Net::new(&[1, 2, 3, 4, 5], config);
    net.elect(1);
    let term = net.term(1);
    let timeout = net.timeout_ticks(1);
    net.partition(&[1, 2]);
    net.propose(1, "minority");

    let stepped_down = net.tick_until(2 * timeout, |net| net.role(1) != Role::Leader).expect("the minority leader never stepped down");
    assert!(stepped_down > timeout, "stepped down after {stepped_down} ticks, before a full election timeout without a quorum");
    assert_eq!(net.raw_mut(1).propose("refused".into()), Err(ProposeError::NotLeader { leader: NodeId::NONE }));

    let elected = net.tick_until(10 * timeout, |net| net.leader().is_some_and(|l| l >= 3));
    assert!(elected.is_some(), "the majority did not elect a leader");
    let leader = net.leader().expect("just checked");
    assert!(net.term(leader) > term);
    for n in [1, 2] {
        assert_eq!(net.term(n), term, "with pre-vote the minority's terms stay put");
    }
    net.propose(leader, "majority");
    net.settle();
    for n in [3, 4, 5] {
        assert_eq!(net.sm(n), strings(&["majority"]), "node {n}");
    }
    assert!(net.sm(1).is_empty() && net.sm(2).is_empty());

    net.heal();
    net.ticks(3);
    for n in [1, 2, 3, 4, 5] {
        assert_eq!((net.leader_of(n), net.sm(n)), (leader, strings(&["majority"])), "node {n}");
    }
}

// ---- Linearizable reads (thesis §6.4) ------------------------------------------------

/// A first read confirms leadership with a heartbeat round, and while reads
/// keep coming the followers echo every round; from then on the leader
/// answers a read from its lease, without a round trip.
#[test]
fn lease_read_served_while_quorum_live() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    start_lease(&mut net, 1);
    net.tick_all();
    assert!(net.raw(1).raft.lease_valid());
    let committed = net.committed(1);
    net.raw_mut(1).read_index(7).unwrap();
    let rd = net.ready(1);
    assert_eq!(rd.read_states, vec![ReadState { request_id: 7, index: committed }]);
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty(), "a lease read needs no messages: {:?}", rd.messages);
    net.handle(1, rd);
}

/// A leader cut off from its quorum stops serving lease reads within the
/// lease, which ends before any other node can be elected; reads started
/// after that are never answered, and after stepping down it refuses them.
#[test]
fn lease_read_refused_after_losing_quorum() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    start_lease(&mut net, 1);
    net.tick_all();
    let lease_ticks = net.node(1).cfg.lease_ticks;
    assert!(net.raw(1).raft.lease_valid());
    net.isolate(1);

    let expired = net.tick_until(lease_ticks, |net| !net.raw(1).raft.lease_valid());
    assert!(expired.is_some(), "the lease outlived {lease_ticks} ticks without a quorum");
    net.raw_mut(1).read_index(11).unwrap();
    let mut other_leader_seen = false;
    for _ in 0..4 * net.timeout_ticks(1) {
        net.tick_all();
        let other = [2, 3].into_iter().any(|n| net.role(n) == Role::Leader);
        other_leader_seen |= other;
        if other && net.role(1) == Role::Leader {
            assert!(!net.raw(1).raft.lease_valid(), "the old leader holds a lease while another leads");
        }
    }
    assert!(other_leader_seen, "the majority did not elect a new leader");
    assert!(net.node(1).read_states.is_empty(), "an isolated leader answered a read");
    assert_ne!(net.role(1), Role::Leader);
    assert_eq!(net.raw_mut(1).read_index(12), Err(ReadError::NoLeader));
}

/// A read at leader `leader`, confirmed by a heartbeat round; its answer is
/// taken out of the way.
fn start_lease(net: &mut Net, leader: u64) {
    net.raw_mut(leader).read_index(1_000).unwrap();
    net.stabilize();
    assert_eq!(net.node(leader).read_states.len(), 1, "the first read was not confirmed");
    net.node_mut(leader).read_states.clear();
}

/// A leader that serves no reads asks a follower to answer a heartbeat only
/// when it has not heard from it for a heartbeat interval (enough for check
/// quorum); after a read every follower answers every round, which keeps
/// the lease.
#[test]
fn without_reads_followers_answer_only_the_heartbeats_the_leader_needs() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let count = |net: &Net, from: u64, to: u64, answer: bool| {
        let wanted = |m: &&&Message| match m.body {
            MessageBody::Heartbeat { .. } => !answer,
            MessageBody::HeartbeatResponse { .. } => answer,
            _ => false,
        };
        net.sent_between(from, to).iter().filter(wanted).count()
    };
    let totals = |net: &Net| [2, 3].map(|f| (count(net, 1, f, false), count(net, f, 1, true)));
    let before = totals(&net);
    for _ in 0..4 * net.timeout_ticks(1) {
        net.tick_all();
        assert_eq!(net.role(1), Role::Leader, "the leader lost its quorum");
    }
    for ((sent0, answered0), (sent, answered)) in before.into_iter().zip(totals(&net)) {
        let (sent, answered) = (sent - sent0, answered - answered0);
        assert!(sent > 4 && answered * 2 <= sent + 1, "{answered} answers to {sent} heartbeats");
    }
    // For an election timeout after a read every round is answered: the
    // lease is kept.
    start_lease(&mut net, 1);
    let before = totals(&net);
    for _ in 0..net.node(1).cfg.lease_ticks {
        net.tick_all();
        assert!(net.raw(1).raft.lease_valid(), "the lease lapsed while reads come");
    }
    for ((sent0, answered0), (sent, answered)) in before.into_iter().zip(totals(&net)) {
        assert!(sent > sent0 && answered - answered0 == sent - sent0, "{} answers to {} heartbeats", answered - answered0, sent - sent0);
    }
}

/// Without a lease, the leader answers ReadIndex only once a quorum echoed
/// a heartbeat round sent after the read arrived (one follower suffices of
/// three); a follower's read is confirmed by the leader the same way.
#[test]
fn read_index_waits_for_heartbeat_quorum() {
    let mut net = Net::new(&[1, 2, 3], no_lease_config);
    net.elect(1);
    let committed = net.committed(1);
    net.isolate(2);
    net.cut_from(1, &[3]);
    net.raw_mut(1).read_index(5).unwrap();
    net.stabilize();
    let heartbeats = net.sent_between(1, 3).iter().filter(|m| matches!(m.body, MessageBody::Heartbeat { .. })).count();
    assert!(heartbeats > 0, "the read did not start a heartbeat round");
    assert!(net.node(1).read_states.is_empty(), "answered before any heartbeat echo");
    net.ticks(3);
    assert!(net.node(1).read_states.is_empty(), "answered without a quorum");

    // Node 3 alone echoes: with the leader that is a quorum of three.
    net.heal();
    net.isolate(2);
    net.tick_all();
    assert_eq!(net.node(1).read_states, vec![ReadState { request_id: 5, index: committed }]);

    // A follower's read goes through the leader, which confirms it with a
    // heartbeat round of its own before answering.
    net.sent.clear();
    net.raw_mut(3).read_index(6).unwrap();
    net.stabilize();
    assert_eq!(net.node(3).read_states, vec![ReadState { request_id: 6, index: committed }]);
    let kinds: Vec<(u64, &str)> = net.sent.iter().map(|m| (m.from.0, m.body.name())).collect();
    assert_eq!(kinds, vec![(3, "ReadIndex"), (1, "Heartbeat"), (1, "Heartbeat"), (3, "HeartbeatResponse"), (1, "ReadIndexResponse")]);
}

/// §6.4: a new leader does not know the commit index until it has
/// committed an entry of its own term, so it answers no read before that —
/// not even with a confirmed heartbeat round and a valid lease.
#[test]
fn read_index_requires_entry_of_current_term() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.forget_leader();
    net.set_filter(|m| !(m.from == nid(1) && is_append(m)));
    net.campaign(1);
    net.stabilize();
    assert_eq!(net.role(1), Role::Leader);
    let term_entry = net.last_index(1);
    assert_eq!(net.term_at(1, term_entry.get()), Some(net.term(1)));
    assert!(net.committed(1) < term_entry);

    net.raw_mut(1).read_index(9).unwrap();
    net.tick_all();
    assert_eq!(net.leader_of(2), 1, "node 2 learned the leader from its heartbeat");
    net.raw_mut(2).read_index(10).unwrap();
    net.ticks(2);
    assert!(net.raw(1).raft.lease_valid(), "heartbeats were echoed: the lease holds");
    assert!(net.node(1).read_states.is_empty(), "answered a read before committing an entry of its term");
    assert!(net.node(2).read_states.is_empty());

    net.clear_filter();
    net.ticks(2);
    assert_eq!(net.committed(1), term_entry);
    assert_eq!(net.node(1).read_states, vec![ReadState { request_id: 9, index: term_entry }]);
    assert_eq!(net.node(2).read_states, vec![ReadState { request_id: 10, index: term_entry }]);
}

// ---- Leadership transfer (thesis §3.10) ----------------------------------------------

/// The leader sends TimeoutNow to an up-to-date target, which wins the next
/// term at once (its vote requests pass the voters' lease check).
#[test]
fn leadership_transfer_succeeds() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let term = net.term(1);
    net.propose(1, "x");
    net.stabilize();
    net.raw_mut(1).transfer_leader(nid(2)).unwrap();
    net.stabilize();
    assert_eq!((net.role(2), net.term(2)), (Role::Leader, term.next()));
    assert_eq!((net.role(1), net.leader_of(1)), (Role::Follower, 2));
    net.propose(2, "y");
    net.settle();
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n), strings(&["x", "y"]), "node {n}");
    }
}

/// The leader brings a lagging target up to date before telling it to
/// campaign.
#[test]
fn leadership_transfer_to_lagging_follower_waits_for_catch_up() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    net.isolate(3);
    let last = net.propose(1, "missed-by-3");
    net.stabilize();
    assert!(net.last_index(3) < last);
    net.heal();
    net.sent.clear();
    net.raw_mut(1).transfer_leader(nid(3)).unwrap();
    net.stabilize();
    assert_eq!(net.role(3), Role::Leader);
    let timeout_now = net.sent.iter().position(|m| m.body == MessageBody::TimeoutNow).expect("TimeoutNow was sent");
    let caught_up = net.sent.iter().position(|m| m.from == nid(3) && matches!(m.body, MessageBody::AppendResponse { index, reject: None } if index >= last));
    assert!(caught_up.is_some_and(|at| at < timeout_now), "the target was told to campaign before it caught up: {:?}", net.sent);
    assert_eq!(net.sm(3), strings(&["missed-by-3"]));
}

/// While leadership moves, the leader refuses proposals and membership
/// changes, and does not serve reads from its lease.
#[test]
fn proposals_refused_during_transfer() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    net.raw_mut(1).transfer_leader(nid(2)).unwrap();
    assert_eq!(net.raw_mut(1).propose("during".into()), Err(ProposeError::TransferInProgress(nid(2))));
    let cc = change(Transition::Auto, &[(ChangeOp::AddLearner, 4)]);
    assert_eq!(net.raw_mut(1).propose_conf_change(&cc), Err(ProposeError::TransferInProgress(nid(2))));
    assert!(!net.raw(1).raft.lease_valid(), "the lease must not serve reads while leadership moves");
    net.stabilize();
    assert_eq!(net.role(2), Role::Leader);
    assert_eq!(net.raw_mut(1).propose("late".into()), Err(ProposeError::NotLeader { leader: nid(2) }));
    net.propose(2, "after");
    net.settle();
    assert_eq!(net.sm(1), strings(&["after"]));
}

/// A transfer whose target does not take over within an election timeout
/// is abandoned, and the leader accepts proposals again.
#[test]
fn transfer_aborted_after_election_timeout() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let term = net.term(1);
    let timeout = net.timeout_ticks(1);
    net.isolate(3);
    net.raw_mut(1).transfer_leader(nid(3)).unwrap();
    for tick in 1..timeout {
        net.tick_all();
        assert_eq!(net.raw_mut(1).propose("during".into()), Err(ProposeError::TransferInProgress(nid(3))), "tick {tick}");
    }
    net.tick_all();
    assert_eq!(net.raw(1).raft.lead_transferee, NodeId::NONE, "transfer still pending after an election timeout");
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, term));
    net.propose(1, "after-abort");
    net.settle();
    assert_eq!(net.sm(2), strings(&["after-abort"]));
}

/// A TimeoutNow that arrives after its transfer was abandoned still makes
/// its target campaign past the voters' lease check. The leader that sent
/// it must not have renewed its lease meanwhile: if it had, it would answer
/// reads from that lease while the target leads a newer term and takes
/// writes (a stale read).
#[test]
fn a_late_timeout_now_finds_no_lease_at_its_sender() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    start_lease(&mut net, 1);
    let held: Rc<RefCell<Vec<Message>>> = Rc::default();
    let hold = held.clone();
    net.set_filter(move |m| {
        let late = matches!(m.body, MessageBody::TimeoutNow);
        if late {
            hold.borrow_mut().push(m.clone());
        }
        !late
    });
    net.raw_mut(1).transfer_leader(nid(2)).unwrap();
    net.stabilize();
    let abandoned = net.tick_until(2 * net.timeout_ticks(1), |net| net.raw(1).raft.lead_transferee.is_none());
    assert!(abandoned.is_some(), "the transfer was never abandoned");
    net.clear_filter();
    // Reads keep the heartbeat rounds confirmed, as they would renew a lease.
    start_lease(&mut net, 1);
    net.tick_all();
    let term = net.term(1);

    // The TimeoutNow reaches node 2 now, while node 1 hears from no one.
    net.isolate(1);
    let timeout_now = held.borrow_mut().pop().expect("a TimeoutNow was sent");
    net.raw_mut(2).step(timeout_now);
    net.stabilize();
    assert_eq!((net.role(2), net.term(2)), (Role::Leader, term.next()), "the late TimeoutNow did not elect node 2");
    net.propose(2, "after");
    net.stabilize();
    assert_eq!(net.role(1), Role::Leader, "node 1 cannot have heard of the new term");
    assert!(!net.raw(1).raft.lease_valid(), "node 1 would serve reads from a lease while node 2 leads term {}", net.term(2));
    net.raw_mut(1).read_index(77).unwrap();
    net.process(1);
    assert!(net.node(1).read_states.is_empty(), "node 1 answered a read without a quorum");
}

// ---- Membership changes (thesis chapter 4) ----------------------------------------------

fn small_lag_config(n: u64) -> Config {
    let mut cfg = config(n);
    cfg.promote_lag_entries_max = 5;
    cfg
}

/// §4.2.1: a new server joins as a learner (no vote, not counted for
/// commit), catches up — here by snapshot, as it starts empty — and only
/// then is promoted; promoting it while it lags is refused.
#[test]
fn learner_catches_up_then_promoted() {
    let mut net = Net::new(&[1, 2, 3], small_lag_config);
    net.add_node(small_lag_config(4));
    net.elect(1);
    for i in 0..10 {
        net.propose(1, &format!("early-{i}"));
    }
    net.stabilize();

    net.isolate(4);
    net.propose_change(1, &change(Transition::Auto, &[(ChangeOp::AddLearner, 4)]));
    net.stabilize();
    assert_eq!(net.conf_state(1).learners, ids(&[4]));
    for i in 0..10 {
        net.propose(1, &format!("late-{i}"));
    }
    net.stabilize();
    let promote = change(Transition::Auto, &[(ChangeOp::AddVoter, 4)]);
    match net.raw_mut(1).propose_conf_change(&promote) {
        Err(ProposeError::ConfChange(ConfChangeError::LearnerBehind { id, .. })) => assert_eq!(id, nid(4)),
        other => panic!("promoting a lagging learner: {other:?}"),
    }

    net.heal();
    let caught_up = net.tick_until(50, |net| net.sm(4) == net.sm(1));
    assert!(caught_up.is_some(), "the learner did not catch up: {:?}", net.sm(4));
    assert!(!net.raw(4).raft.promotable(), "a learner must not campaign");
    assert_eq!(net.conf_state(4).learners, ids(&[4]));

    // A learner's acknowledgement does not count toward commit.
    net.isolate(2);
    net.isolate(3);
    let idx = net.propose(1, "needs-a-voter");
    net.settle();
    assert_eq!(net.term_at(4, idx.get()), net.term_at(1, idx.get()), "the learner has the entry\n{}", net.dump());
    assert!(net.committed(1) < idx);
    net.heal();
    net.tick_all();
    assert!(net.committed(1) >= idx);

    net.propose_change(1, &promote);
    net.stabilize();
    net.tick_all();
    for n in [1, 2, 3, 4] {
        let cs = net.conf_state(n);
        assert_eq!((cs.voters, cs.learners), (ids(&[1, 2, 3, 4]), vec![]), "node {n}");
    }
    // Now node 4 counts: with 3 away, 1, 2 and 4 are the quorum of four.
    net.isolate(3);
    let idx = net.propose(1, "counted");
    net.stabilize();
    assert_eq!(net.committed(1), idx);
    assert!(net.raw(4).raft.promotable());
}

/// Adds `learners` as learners at leader 1 and ticks until each has matched
/// the leader's log and applied as far as it has.
fn add_caught_up_learners(net: &mut Net, learners: &[u64]) {
    let changes: Vec<(ChangeOp, u64)> = learners.iter().map(|&n| (ChangeOp::AddLearner, n)).collect();
    net.propose_change(1, &change(Transition::Auto, &changes));
    net.stabilize();
    let caught_up = net.tick_until(50, |net| {
        let leader = &net.raw(1).raft;
        learners.iter().all(|&n| leader.tracker.get(nid(n)).is_some_and(|p| p.matched == leader.log.last_index()) && net.node(n).applied_index == net.node(1).applied_index)
    });
    assert!(caught_up.is_some(), "learners {learners:?} did not catch up");
}

/// §4.3: replacing two voters at once goes through the joint configuration
/// C_old,new, which the leader leaves by itself once it is applied.
#[test]
fn joint_consensus_enter_and_leave() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.add_node(config(4));
    net.add_node(config(5));
    net.elect(1);
    net.propose(1, "before");
    net.stabilize();
    add_caught_up_learners(&mut net, &[4, 5]);

    let cc = change(Transition::Auto, &[(ChangeOp::AddVoter, 4), (ChangeOp::AddVoter, 5), (ChangeOp::Remove, 2), (ChangeOp::Remove, 3)]);
    let joint_index = net.propose_change(1, &cc);
    assert!(net.run_until(100, |net| net.is_joint(1)), "the leader never entered the joint configuration");
    let cs = net.conf_state(1);
    assert_eq!((cs.voters, cs.voters_outgoing, cs.auto_leave), (ids(&[1, 4, 5]), ids(&[1, 2, 3]), true));

    let left = net.tick_until(5, |net| [1, 4, 5].into_iter().all(|n| !net.is_joint(n)));
    assert!(left.is_some(), "the joint configuration was not left\n{}", net.dump());
    for n in [1, 4, 5] {
        let cs = net.conf_state(n);
        assert_eq!((cs.voters, cs.voters_outgoing, cs.learners), (ids(&[1, 4, 5]), vec![], vec![]), "node {n}\n{}", net.dump());
    }
    let leave = net.log_entries(1).into_iter().find(|e| e.index > joint_index && is_leave_joint_entry(e));
    assert!(leave.is_some(), "no leave-joint entry after the joint entry");
    assert!(net.raw(1).raft.tracker.get(nid(2)).is_none() && net.raw(1).raft.tracker.get(nid(3)).is_none());
    assert_eq!(net.role(1), Role::Leader);

    // C_new commits on its own.
    net.isolate(2);
    net.isolate(3);
    net.propose(1, "after");
    net.settle();
    for n in [1, 4, 5] {
        assert_eq!(net.sm(n), strings(&["before", "after"]), "node {n}");
    }
}

/// §4.3: while joint, commitment needs a majority of both the old and the
/// new configuration; an explicit joint configuration stays until left by
/// an explicit empty change, and refuses other changes meanwhile.
#[test]
fn joint_consensus_needs_both_majorities() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.add_node(config(4));
    net.add_node(config(5));
    net.elect(1);
    add_caught_up_learners(&mut net, &[4, 5]);
    let cc = change(Transition::JointExplicit, &[(ChangeOp::AddVoter, 4), (ChangeOp::AddVoter, 5), (ChangeOp::Remove, 3)]);
    net.propose_change(1, &cc);
    net.stabilize();
    net.ticks(3);
    assert!(net.is_joint(1), "an explicit joint configuration must not be left automatically");
    let cs = net.conf_state(1);
    assert_eq!((cs.voters, cs.voters_outgoing, cs.auto_leave), (ids(&[1, 2, 4, 5]), ids(&[1, 2, 3]), false));
    let refused = net.raw_mut(1).propose_conf_change(&change(Transition::Auto, &[(ChangeOp::AddLearner, 6)]));
    assert_eq!(refused, Err(ProposeError::ConfChange(ConfChangeError::AlreadyJoint)));

    // Old majority {1, 2} but no new majority: nothing commits.
    net.isolate(4);
    net.isolate(5);
    let idx = net.propose(1, "old-majority-only");
    net.stabilize();
    assert!(net.committed(1) < idx, "committed with the old configuration's majority alone");
    // Both majorities: {1, 2} of {1, 2, 3} and {1, 2, 4} of {1, 2, 4, 5}.
    net.heal();
    net.isolate(3);
    net.isolate(5);
    net.tick_all();
    assert!(net.committed(1) >= idx);

    net.heal();
    net.propose_change(1, &ConfChange::leave_joint());
    net.stabilize();
    net.tick_all();
    for n in [1, 2, 4, 5] {
        let cs = net.conf_state(n);
        assert_eq!((cs.voters, cs.voters_outgoing), (ids(&[1, 2, 4, 5]), vec![]), "node {n}");
    }
}

/// Runs joint consensus from {1, 2, 3} to {1, 2, 4} until every survivor
/// applied the joint entry, with the leave entry withheld from everyone,
/// then crashes leader 1.
fn joint_config_with_crashed_leader() -> Net {
    let mut net = Net::new(&[1, 2, 3], config);
    net.add_node(config(4));
    net.elect(1);
    net.propose(1, "before");
    net.stabilize();
    add_caught_up_learners(&mut net, &[4]);

    net.set_filter(|m| {
        let MessageBody::Append { entries, .. } = &m.body else { return true };
        !(m.from == nid(1) && entries.iter().any(is_leave_joint_entry))
    });
    net.propose_change(1, &change(Transition::JointImplicit, &[(ChangeOp::AddVoter, 4), (ChangeOp::Remove, 3)]));
    let all_joint = net.tick_until(20, |net| [1, 2, 3, 4].into_iter().all(|n| net.is_joint(n)));
    assert!(all_joint.is_some(), "not every node entered the joint configuration");
    assert!(net.log_entries(1).last().is_some_and(is_leave_joint_entry), "the leader proposed leaving");
    for n in [2, 3, 4] {
        assert!(!net.log_entries(n).iter().any(is_leave_joint_entry), "node {n} got the leave entry");
    }
    net.crash(1);
    net.clear_filter();
    net
}

/// Every survivor of the new configuration left the joint one, a member of
/// it leads, and it commits; the crashed leader rejoins and agrees.
fn check_joint_change_finished(net: &mut Net, survivors: &[u64]) {
    let left = net.tick_until(100, |net| survivors.iter().all(|&n| !net.is_joint(n)) && net.leader().is_some_and(|l| survivors.contains(&l)));
    assert!(left.is_some(), "the cluster never left the joint configuration: leader {:?}, conf {:?}", net.leader(), net.conf_state(survivors[0]));
    for &n in survivors {
        let cs = net.conf_state(n);
        assert_eq!((cs.voters, cs.voters_outgoing), (ids(&[1, 2, 4]), vec![]), "node {n}");
    }
    let leader = net.leader().expect("a leader");
    assert!([2, 4].contains(&leader), "leader {leader} is not in the new configuration");
    net.propose(leader, "after");
    net.stabilize();
    net.restart(1);
    net.ticks(3);
    for n in [1, 2, 4] {
        assert_eq!(net.sm(n), strings(&["before", "after"]), "node {n}");
        assert_eq!(net.conf_state(n).voters, ids(&[1, 2, 4]), "node {n}");
    }
}

/// §4.3: the leader crashes in C_old,new. A new leader needs both
/// majorities; it finishes the change by leaving the joint configuration.
#[test]
fn joint_consensus_new_leader_crashes() {
    let mut net = joint_config_with_crashed_leader();
    net.forget_leader();
    net.campaign(2);
    net.stabilize();
    assert_eq!(net.role(2), Role::Leader);
    check_joint_change_finished(&mut net, &[2, 4]);
}

/// As above, but the node elected in C_old,new is one the change removes
/// (a voter of the outgoing half only). It must still finish the change
/// (and then step down or hand over), not keep the group joint forever.
#[test]
fn joint_consensus_outgoing_voter_elected_finishes_change() {
    let mut net = joint_config_with_crashed_leader();
    net.forget_leader();
    net.campaign(3);
    // Stop as soon as node 3 leads: left to stabilize, it would already have
    // finished the change and handed leadership over.
    let won = net.run_until(100, |net| net.role(3) == Role::Leader);
    assert!(won, "node 3 can win with votes of both majorities\n{}", net.dump());
    assert!(net.is_joint(3), "node 3 leads the joint configuration");
    check_joint_change_finished(&mut net, &[2, 4]);
    assert_eq!(net.role(3), Role::Follower, "node 3, removed, stepped down");
}

/// The automatic leave of a joint configuration is refused while a
/// leadership transfer runs; it is retried on a later tick, not dropped.
#[test]
fn auto_leave_retried_after_transfer_aborts() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.add_node(config(4));
    net.elect(1);
    add_caught_up_learners(&mut net, &[4]);

    net.set_filter(|m| !matches!(m.body, MessageBody::TimeoutNow));
    net.propose_change(1, &change(Transition::JointImplicit, &[(ChangeOp::AddVoter, 4), (ChangeOp::Remove, 3)]));
    net.raw_mut(1).transfer_leader(nid(2)).expect("node 2 is a voter");
    net.stabilize();
    assert!(net.is_joint(1), "the joint entry was applied");
    assert_eq!(net.raw(1).raft.lead_transferee, nid(2));
    assert!(!net.log_entries(1).iter().any(is_leave_joint_entry), "the leave was proposed during the transfer");

    let left = net.tick_until(3 * net.timeout_ticks(1), |net| [1, 2, 4].into_iter().all(|n| !net.is_joint(n)));
    assert!(left.is_some(), "the joint configuration was never left\n{}", net.dump());
    assert_eq!((net.role(1), net.raw(1).raft.lead_transferee), (Role::Leader, NodeId::NONE));
    for n in [1, 2, 4] {
        assert_eq!(net.conf_state(n).voters, ids(&[1, 2, 4]), "node {n}");
    }
}

/// §4.2.2: the leader may remove itself through the joint configuration. It
/// leads C_old,new from the outgoing half without counting itself toward
/// C_new's majority, may leave the joint configuration itself, proposes
/// nothing after the leave entry, and once C_new is applied hands leadership
/// to a voter of C_new that holds its whole log, then steps down. (Removing
/// it in one step is refused: see `unsafe_conf_change_refused`.)
#[test]
fn leader_removes_itself_through_joint_consensus() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.add_node(config(4));
    net.elect(1);
    net.propose(1, "before");
    net.stabilize();
    add_caught_up_learners(&mut net, &[4]);

    net.propose_change(1, &change(Transition::JointExplicit, &[(ChangeOp::AddVoter, 4), (ChangeOp::Remove, 1)]));
    net.stabilize();
    let cs = net.conf_state(1);
    assert_eq!((cs.voters, cs.voters_outgoing), (ids(&[2, 3, 4]), ids(&[1, 2, 3])));
    assert_eq!(net.role(1), Role::Leader, "the leader keeps leading C_old,new");
    net.propose(1, "joint");
    net.stabilize();

    // {1, 2} is a majority of C_old but, without the leader's own entry, not
    // of C_new {2, 3, 4}.
    net.isolate(3);
    net.isolate(4);
    let idx = net.propose(1, "needs-c-new");
    net.stabilize();
    assert!(net.committed(1) < idx, "the leader counted itself toward C_new");
    net.heal();
    assert!(net.tick_until(5, |net| net.committed(1) >= idx).is_some(), "C_new's majority did not commit\n{}", net.dump());

    // The leader leaves the joint configuration; proposals after the leave
    // entry are refused, so its whole log is on C_new's majority when it goes.
    let leave = net.propose_change(1, &ConfChange::leave_joint());
    assert_eq!(net.raw_mut(1).propose("after-leave".into()), Err(ProposeError::LeaderLeaving));
    net.stabilize();
    assert_eq!(net.role(1), Role::Follower, "the removed leader stepped down\n{}", net.dump());
    let leader = net.leader().expect("leadership was handed over at once");
    assert!([2, 3, 4].contains(&leader), "leader {leader} is not in C_new");
    assert!(net.last_index(leader) >= leave);
    net.propose(leader, "after");
    net.settle();
    for n in [2, 3, 4] {
        let cs = net.conf_state(n);
        assert_eq!((cs.voters, cs.voters_outgoing), (ids(&[2, 3, 4]), vec![]), "node {n}");
        assert_eq!(net.sm(n), strings(&["before", "joint", "needs-c-new", "after"]), "node {n}");
    }
    assert!(!net.raw(1).raft.promotable(), "the removed node must not campaign");
}

/// §4.2.2 and the leader's safety checks: changes that would remove the
/// leader, or leave the new configuration without a quorum of live voters,
/// or overlap a pending change, or leave a joint configuration that is not
/// there, are refused with an error, and nothing reaches the log.
#[test]
fn unsafe_conf_change_refused() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let refuse = |net: &mut Net, cc: &ConfChange, want: ConfChangeError| {
        let (last, cs) = (net.last_index(1), net.conf_state(1));
        assert_eq!(net.raw_mut(1).propose_conf_change(cc), Err(ProposeError::ConfChange(want)), "{cc:?}");
        assert_eq!((net.last_index(1), net.conf_state(1)), (last, cs), "a refused change touched the log");
    };
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::Remove, 1)]), ConfChangeError::RemovesLeader(nid(1)));
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::AddLearner, 1)]), ConfChangeError::RemovesLeader(nid(1)));
    refuse(&mut net, &ConfChange::leave_joint(), ConfChangeError::NotJoint);
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::Remove, 2), (ChangeOp::AddVoter, 2)]), ConfChangeError::Duplicate(nid(2)));

    // Node 3 goes quiet for longer than an election timeout.
    net.isolate(3);
    net.ticks(net.timeout_ticks(1) + 1);
    assert_eq!(net.role(1), Role::Leader);
    // {1, 3} would have one live voter of two.
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::Remove, 2)]), ConfChangeError::LosesQuorum);
    // {1, 2, 3, 4} would have two live voters of four (4 was never heard from).
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::AddVoter, 4)]), ConfChangeError::LosesQuorum);

    // Removing the silent node is safe: {1, 2} are both live.
    let index = net.propose_change(1, &change(Transition::Auto, &[(ChangeOp::Remove, 3)]));
    refuse(&mut net, &change(Transition::Auto, &[(ChangeOp::AddLearner, 5)]), ConfChangeError::Pending(index.get()));
    net.settle();
    for n in [1, 2] {
        assert_eq!(net.conf_state(n).voters, ids(&[1, 2]), "node {n}");
    }
}

// ---- Snapshots (§7) -----------------------------------------------------------------------

fn small_chunk_config(n: u64) -> Config {
    let mut cfg = config(n);
    cfg.snapshot_chunk_bytes = 64;
    cfg.snapshot_chunks_inflight = 2;
    cfg
}

/// A follower that fell behind the leader's compacted log receives the
/// state machine as a snapshot in chunks (bounded in size and in flight),
/// installs it, and resumes from the log.
#[test]
fn lagging_follower_installs_chunked_snapshot() {
    let mut net = Net::new(&[1, 2, 3], small_chunk_config);
    net.elect(1);
    net.isolate(3);
    for i in 0..40 {
        net.propose(1, &format!("entry-{i:04}"));
    }
    net.stabilize();
    net.snapshot(1);
    net.snapshot(2);
    let snapshot_index = net.raw(1).raft.log.first_index().prev();
    assert_eq!(snapshot_index, net.committed(1));
    assert!(net.last_index(3) < snapshot_index, "node 3 must be behind the compacted log");

    net.sent.clear();
    net.heal();
    let installed = net.tick_until(50, |net| net.sm(3) == net.sm(1));
    assert!(installed.is_some(), "the snapshot was not installed");
    assert_eq!(net.raw(3).raft.log.first_index(), snapshot_index.next());

    let chunks: Vec<(u64, usize, bool)> = net
        .sent_between(1, 3)
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::SnapshotChunk { offset, data, last, .. } => Some((*offset, data.len(), *last)),
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 5, "expected several chunks: {chunks:?}");
    assert!(chunks.iter().all(|&(_, len, _)| len <= 64), "a chunk exceeds snapshot_chunk_bytes: {chunks:?}");
    let mut next_offset = 0;
    for &(offset, len, _) in &chunks {
        assert_eq!(offset, next_offset, "chunks out of order or resent without loss: {chunks:?}");
        next_offset += len as u64;
    }
    assert_eq!(chunks.iter().filter(|c| c.2).count(), 1);
    assert!(chunks.last().is_some_and(|c| c.2));

    // Never more than two chunks (128 bytes) beyond what node 3 confirmed.
    let (mut sent_to, mut acked) = (0u64, 0u64);
    for m in &net.sent {
        match &m.body {
            MessageBody::SnapshotChunk { offset, data, .. } if m.to == nid(3) => sent_to = sent_to.max(offset + data.len() as u64),
            MessageBody::SnapshotResponse { next_offset, .. } if m.from == nid(3) => acked = acked.max(*next_offset),
            _ => {}
        }
        assert!(sent_to - acked <= 128, "more than the chunk window in flight: sent {sent_to}, acked {acked}");
    }

    net.propose(1, "after-snapshot");
    net.settle();
    assert_eq!(net.sm(3).last().map(String::as_str), Some("after-snapshot"));
    assert_eq!(net.log_terms(3), net.log_terms(2).into_iter().filter(|&(i, _)| i >= snapshot_index.get()).collect::<Vec<_>>());
}

/// Once a follower has installed a snapshot and acknowledged the leader's
/// probe at the snapshot index, new entries should flow to it at once
/// (etcd-raft moves a probe acknowledged at the match index to replicate).
#[test]
fn follower_resumes_replication_right_after_snapshot() {
    let mut net = Net::new(&[1, 2, 3], small_chunk_config);
    net.elect(1);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, &format!("entry-{i}"));
    }
    net.stabilize();
    net.snapshot(1);
    net.heal();
    let installed = net.tick_until(20, |net| net.sm(3) == net.sm(1));
    assert!(installed.is_some(), "the snapshot was not installed");
    let index = net.propose(1, "next");
    net.stabilize();
    assert_eq!(net.last_index(3), index, "the entry did not reach the follower without a heartbeat\n{}", net.dump());
}

// ---- The Ready contract (thesis §10.2.1) -------------------------------------------------

/// Votes and acknowledgements leave only after the ready that carries them
/// is durable; the hard state appears in a ready exactly when it changed;
/// the leader counts itself toward commit only for entries whose ready was
/// reported persisted, and readies may be acknowledged late and partially.
#[test]
fn ready_durability_contract() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.forget_leader();
    let hs0 = net.raw(1).raft.hard_state();

    net.campaign(1);
    assert_eq!(net.role(1), Role::PreCandidate);
    let rd = net.ready(1);
    let number0 = rd.number;
    assert_eq!(rd.hard_state, None, "a pre-vote changes no durable state");
    assert!(rd.messages.is_empty());
    assert!(rd.persisted_messages.iter().all(|m| matches!(m.body, MessageBody::RequestVote { pre: true, .. })) && rd.persisted_messages.len() == 2);
    net.handle(1, rd);
    net.deliver_all();
    net.round();
    let rd = net.ready(1);
    assert_eq!(net.role(1), Role::Candidate);
    assert_eq!(rd.number, number0 + 1, "one number per ready");
    assert_eq!(rd.hard_state, Some(HardState { term: hs0.term.next(), vote: nid(1), commit: hs0.commit }));
    assert!(rd.persisted_messages.iter().all(|m| matches!(m.body, MessageBody::RequestVote { pre: false, .. })) && rd.messages.is_empty());
    net.handle(1, rd);
    net.deliver_all();
    let rd = net.ready(2);
    assert_eq!(rd.hard_state.map(|hs| hs.vote), Some(nid(1)), "the vote is persisted");
    assert!(rd.messages.is_empty(), "a vote must wait for the durable hard state");
    assert!(rd.persisted_messages.iter().any(|m| m.body == MessageBody::VoteResponse { pre: false, granted: true }));
    net.handle(2, rd);
    net.stabilize();
    assert_eq!(net.role(1), Role::Leader);

    // Nothing changed: no hard state in the ready.
    net.tick(1);
    let rd = net.ready(1);
    assert_eq!(rd.hard_state, None);
    assert!(!rd.must_persist() && rd.messages.iter().all(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
    net.handle(1, rd);
    net.stabilize();

    // The leader holds its writes; only node 2 hears from it.
    net.node_mut(1).hold_persist = true;
    net.cut_from(1, &[3]);
    let x = net.propose(1, "x");
    let rd = net.ready(1);
    let x_ready = rd.number;
    assert_eq!(rd.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![x]);
    assert!(rd.messages.iter().any(is_append), "appends may leave before the leader's write is durable");
    net.handle(1, rd);
    net.deliver_all();
    let rd = net.ready(2);
    assert!(rd.messages.is_empty(), "a follower's ack must wait for its write");
    assert!(rd.persisted_messages.iter().any(|m| matches!(m.body, MessageBody::AppendResponse { index, reject: None } if index == x)));
    net.handle(2, rd);
    net.stabilize();
    assert!(net.committed(1) < x, "committed with one durable copy of three");

    // A second ready in flight; the first is reported durable alone.
    let y = net.propose(1, "y");
    net.stabilize();
    net.persist_up_to(1, x_ready);
    net.stabilize();
    assert_eq!(net.committed(1), x, "only the first ready is durable on the leader");
    net.node_mut(1).hold_persist = false;
    net.persist(1);
    net.settle();
    assert_eq!(net.committed(1), y);
    assert_eq!(net.raw(1).raft.log.storage.hard_state().commit, y, "the new commit index reached a ready's hard state");
    assert_eq!(net.sm(1), strings(&["x", "y"]));
    assert_eq!(net.sm(2), strings(&["x", "y"]));
}

// ---- Quiescence ----------------------------------------------------------------------------

/// A group with nothing in flight reports idle and may stop ticking; a
/// proposal or a message wakes it, and it goes back to idle afterwards
/// without any election.
#[test]
fn quiescence() {
    let mut net = Net::new(&[1, 2, 3], config);
    assert!(!net.raw(1).is_idle(), "a follower without a leader is not idle");
    net.elect(1);
    let term = net.term(1);
    net.propose(1, "a");
    net.stabilize();
    net.tick_all();
    for n in [1, 2, 3] {
        assert!(net.raw(n).is_idle(), "node {n} should be idle");
    }

    // A follower that lags keeps the leader busy.
    net.isolate(3);
    net.propose(1, "b");
    net.stabilize();
    assert!(!net.raw(1).is_idle(), "the leader is idle with a follower behind");
    net.heal();
    net.tick_all();
    assert!(net.raw(1).is_idle());

    net.quiesce_all();
    assert!(!net.raw(1).raft.lease_valid(), "a quiesced leader cannot keep a lease");
    assert!(net.ids().iter().all(|&n| !net.raw(n).has_ready()));

    // Woken by a proposal.
    net.wake(1);
    net.propose(1, "c");
    assert!(!net.raw(1).is_idle());
    net.stabilize();
    assert!(!net.node(2).quiesced, "the append woke the follower");
    net.tick_all();
    for n in [1, 2, 3] {
        assert_eq!((net.term(n), net.sm(n)), (term, strings(&["a", "b", "c"])), "node {n}");
        assert!(net.raw(n).is_idle(), "node {n} did not settle");
    }

    // Woken by a message: a read at a follower reaches the sleeping leader.
    net.quiesce_all();
    net.wake(2);
    net.raw_mut(2).read_index(42).unwrap();
    net.stabilize();
    assert!(!net.node(1).quiesced);
    net.tick_all();
    assert_eq!(net.node(2).read_states, vec![ReadState { request_id: 42, index: net.committed(1) }]);
    for n in [1, 2, 3] {
        assert_eq!((net.role(n) == Role::Leader, net.term(n)), (n == 1, term), "node {n}");
    }
}

/// A quiesced leader woken by a write re-asserts itself with the write's
/// appends alone: no heartbeat round, so no answers and no empty appends
/// after them. Woken with a read waiting, or without a write, it still
/// sends the round.
#[test]
fn a_leader_woken_by_a_write_sends_appends_without_a_heartbeat_round() {
    let bodies = |rd: &raftcore::Ready| rd.messages.iter().map(|m| (m.to.0, matches!(m.body, MessageBody::Heartbeat { .. }))).collect::<Vec<_>>();
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    net.propose(1, "a");
    net.stabilize();
    net.tick_all();
    net.quiesce_all();

    net.wake(1);
    net.propose(1, "b");
    let rd = net.ready(1);
    assert_eq!(bodies(&rd), vec![(2, false), (3, false)], "one append to each follower, nothing else");
    net.handle(1, rd);
    net.stabilize();
    net.tick_all();
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n), strings(&["a", "b"]), "node {n}");
        assert!(net.raw(n).is_idle(), "node {n} did not settle");
    }

    // A read waits for a round: it is sent beside the appends.
    net.quiesce_all();
    net.wake(1);
    net.raw_mut(1).read_index(7).unwrap();
    net.propose(1, "c");
    let rd = net.ready(1);
    assert!(bodies(&rd).contains(&(2, true)) && bodies(&rd).contains(&(3, true)), "the read's round goes out: {:?}", bodies(&rd));
    net.handle(1, rd);
    net.stabilize();
    net.tick_all();

    // Woken without a write (by a message, say), it re-asserts itself with
    // the round.
    net.quiesce_all();
    net.wake(1);
    let rd = net.ready(1);
    assert_eq!(bodies(&rd), vec![(2, true), (3, true)], "a heartbeat to each follower");
    net.handle(1, rd);
    net.stabilize();
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n), strings(&["a", "b", "c"]), "node {n}");
    }
}

fn skipping_config(n: u64) -> Config {
    let mut cfg = config(n);
    cfg.skip_heartbeats_after_appends = true;
    cfg
}

/// With `skip_heartbeats_after_appends`, a follower that an append reached
/// since the last round gets no heartbeat asking nothing: it learns the
/// commit a round later, and the leader counts as idle (may quiesce) only
/// once every follower was told it. Busy followers keep their leader.
#[test]
fn heartbeats_after_appends_are_skipped_until_the_leader_goes_idle() {
    let heartbeats_to = |net: &Net, to: u64| net.sent_between(1, to).iter().filter(|m| matches!(m.body, MessageBody::Heartbeat { .. })).count();
    let mut net = Net::new(&[1, 2, 3], skipping_config);
    net.elect(1);
    let term = net.term(1);
    net.tick_all();
    net.tick_all();
    net.propose(1, "a");
    net.stabilize();
    assert_eq!(net.sm(1), strings(&["a"]));
    assert_eq!(net.sm(2), strings(&[]), "the append carried the commit before it");

    let before = heartbeats_to(&net, 2);
    net.tick_all();
    assert_eq!(heartbeats_to(&net, 2), before, "the append reached node 2 since the last round");
    assert_eq!(net.sm(2), strings(&[]));
    assert!(!net.raw(1).is_idle(), "a follower was not told the commit yet");

    net.tick_all();
    assert_eq!(heartbeats_to(&net, 2), before + 1, "a round without appends goes out");
    for n in [1, 2, 3] {
        assert_eq!(net.sm(n), strings(&["a"]), "node {n}");
        assert!(net.raw(n).is_idle(), "node {n} should be idle");
    }
    net.quiesce_all();

    // A write every tick for three election timeouts: the followers hear
    // only appends, yet nobody campaigns, and all catch up once it stops.
    net.wake(1);
    let mut written = vec!["a".to_string()];
    for i in 0..30 {
        let w = format!("w{i}");
        net.propose(1, &w);
        written.push(w);
        net.tick_all();
    }
    net.ticks(2);
    for n in [1, 2, 3] {
        assert_eq!((net.role(n) == Role::Leader, net.term(n)), (n == 1, term), "node {n}");
        assert_eq!(net.sm(n), written, "node {n}");
        assert!(net.raw(n).is_idle(), "node {n} did not settle");
    }
}

#[test]
fn skipping_heartbeats_needs_two_intervals_within_the_election_timeout() {
    let mut cfg = skipping_config(1);
    cfg.heartbeat_ticks = 5;
    assert!(matches!(cfg.validate(), Err(ConfigError::HeartbeatSkipTooLong { .. })));
    cfg.heartbeat_ticks = 4;
    assert!(cfg.validate().is_ok());
}

// ---- A single voter ----------------------------------------------------------------

/// The only voter elects itself on its first tick instead of waiting out an
/// election timeout (a restarted single-node cluster serves at once); with a
/// second voter it waits again.
#[test]
fn sole_voter_leads_after_one_tick() {
    let mut net = Net::new(&[1], config);
    net.tick(1);
    net.stabilize();
    assert_eq!(net.role(1), Role::Leader);
    net.propose(1, "x");
    net.stabilize();
    assert_eq!(net.sm(1), strings(&["x"]));

    let mut pair = Net::new(&[1, 2], config);
    pair.tick(1);
    pair.stabilize();
    assert_eq!(pair.role(1), Role::Follower, "two voters wait for the timeout");
}

// ---- Driver support ------------------------------------------------------------------

/// `hot_memory` names where a leader's per-follower state and voters are.
#[test]
fn hot_memory_names_the_progress_and_the_voters() {
    let mut net = Net::new(&[1, 2, 3], config);
    net.elect(1);
    let raw = net.raw(1);
    let ranges = raw.hot_memory();
    let progress = raw.raft.tracker.iter().next().expect("a leader tracks its voters");
    let progress_at = progress as *const raftcore::tracker::Progress as usize;
    let progress_bytes = 3 * std::mem::size_of::<raftcore::tracker::Progress>();
    assert!(ranges.contains(&(progress_at, progress_bytes)), "{ranges:?} lacks the progress at {progress_at:#x}");
    let voters = raw.raft.tracker.voters.incoming.voters();
    assert!(ranges.contains(&(voters.as_ptr() as usize, 3 * std::mem::size_of::<NodeId>())), "{ranges:?} lacks the voters");
}
