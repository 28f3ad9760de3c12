//! Randomized fault simulation: many seeds, each a reproducible world of
//! message loss, duplication, reordering, partitions (also one-way), crashes
//! with lost unpersisted state, compaction with snapshots, membership
//! changes and leadership transfers, with Raft's safety properties checked after every step and
//! liveness (every acknowledged write applied everywhere) checked at the end.
//!
//! `RAFTCORE_SIM_SEEDS=N` sets how many seeds run (default 500);
//! `RAFTCORE_SIM_SEED=S` replays one seed; `SIM_TRACE=1` prints every message.

mod sim;

use raftcore::{ChangeOp, ConfChange, NodeId, Transition};
use sim::{Cluster, Faults};

const STEPS_PER_SEED: u64 = 1_500;

/// What the seeds exercised, summed: a run that stops exercising a feature
/// (no snapshots, no membership changes, no reads) fails instead of passing
/// vacuously.
#[derive(Default, Debug)]
struct Coverage {
    acked: u64,
    leaders_elected: u64,
    snapshots_installed: u64,
    conf_changes_applied: u64,
    reads_checked: u64,
}

fn run_seed(seed: u64, voters: u64, spares: u64) -> Coverage {
    let faults = Faults { drop_pct: 3, dup_pct: 3, delay_max: 6, persist_delay_max: 3 };
    let mut c = Cluster::new(voters, spares, seed, faults);
    c.compact_every_entries = 20;
    for n in 0..STEPS_PER_SEED {
        if n % 4 == 0 {
            c.tick_all();
        }
        inject_fault(&mut c, voters + spares);
        client_load(&mut c, voters + spares);
        c.step();
    }
    c.converge(40_000);
    let k = &c.checker;
    Coverage {
        acked: k.acked.len() as u64,
        leaders_elected: k.leaders_elected,
        snapshots_installed: k.snapshots_installed,
        conf_changes_applied: k.conf_changes_applied,
        reads_checked: k.reads_checked,
    }
}

fn inject_fault(c: &mut Cluster, nodes: u64) {
    let roll = c.rng.below(1000);
    let victim = 1 + c.rng.below(nodes);
    match roll {
        0..=2 => c.crash(victim),
        3..=12 => c.restart(victim),
        13..=14 => c.isolate(victim),
        15..=16 => {
            let a = 1 + c.rng.below(nodes);
            let b = 1 + c.rng.below(nodes);
            // One-way: a's messages to b are lost, b's to a arrive.
            c.cut.insert((NodeId(a), NodeId(b)));
        }
        17..=18 => {
            let side: Vec<u64> = (1..=nodes).filter(|_| c.rng.below(2) == 0).collect();
            c.partition(&side);
        }
        19..=30 => c.heal(),
        31..=34 => change_membership(c, nodes),
        35..=37 => {
            // A transfer whose TimeoutNow may arrive late, after the
            // transfer was abandoned (see the scenario of that name).
            if let Some(leader) = c.leader() {
                let _ = c.node_mut(leader.0).raw_mut().transfer_leader(NodeId(victim));
            }
        }
        _ => {}
    }
}

fn client_load(c: &mut Cluster, nodes: u64) {
    if c.rng.below(3) == 0 {
        if let Some(leader) = c.leader() {
            c.propose(leader.0);
        }
    }
    if c.rng.below(8) == 0 {
        let at = 1 + c.rng.below(nodes);
        c.read(at);
    }
}

/// Proposes a random membership change at the leader: add a learner,
/// promote one, remove a voter, or swap voters through a joint configuration.
fn change_membership(c: &mut Cluster, nodes: u64) {
    let Some(leader) = c.leader() else { return };
    let a = NodeId(1 + c.rng.below(nodes));
    let b = NodeId(1 + c.rng.below(nodes));
    let transition = [Transition::Auto, Transition::JointImplicit, Transition::JointExplicit][c.rng.below(3) as usize];
    let changes = match c.rng.below(5) {
        0 => vec![(ChangeOp::AddLearner, a)],
        1 => vec![(ChangeOp::AddVoter, a)],
        2 => vec![(ChangeOp::Remove, a)],
        3 => vec![(ChangeOp::AddVoter, a), (ChangeOp::Remove, b)],
        _ => vec![],
    };
    let cc = ConfChange { transition, changes };
    let _ = c.node_mut(leader.0).raw_mut().propose_conf_change(&cc);
}

fn seeds() -> Vec<u64> {
    if let Some(one) = std::env::var("RAFTCORE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![one];
    }
    let count: u64 = std::env::var("RAFTCORE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    (1..=count).collect()
}

fn run_all(voters: u64, spares: u64, salt: u64) {
    let mut total = Coverage::default();
    let seeds = seeds();
    for &replay_seed in &seeds {
        let seed = replay_seed ^ salt;
        if std::env::var_os("SIM_VERBOSE").is_some() {
            eprintln!("seed {replay_seed} ({voters} voters)");
        }
        match std::panic::catch_unwind(|| run_seed(seed, voters, spares)) {
            Ok(c) => {
                total.acked += c.acked;
                total.leaders_elected += c.leaders_elected;
                total.snapshots_installed += c.snapshots_installed;
                total.conf_changes_applied += c.conf_changes_applied;
                total.reads_checked += c.reads_checked;
            }
            Err(e) => {
                let seed = replay_seed;
                eprintln!("FAILED seed {seed} ({voters} voters, {spares} spares): replay with RAFTCORE_SIM_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{} seeds, {voters} voters: {total:?}", seeds.len());
    let n = seeds.len() as u64;
    if n >= 20 {
        assert!(total.acked >= n * 50, "too few acknowledged writes: {total:?}");
        assert!(total.leaders_elected >= n, "too few elections: {total:?}");
        assert!(total.snapshots_installed > 0 && total.conf_changes_applied > 0 && total.reads_checked > 0, "a feature went unexercised: {total:?}");
    }
}

#[test]
fn three_voters_two_spares_under_faults() {
    run_all(3, 2, 0);
}

#[test]
fn five_voters_one_spare_under_faults() {
    let count: u64 = std::env::var("RAFTCORE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    if std::env::var("RAFTCORE_SIM_SEED").is_ok() || count > 0 {
        run_all(5, 1, 0x5555_0000);
    }
}
