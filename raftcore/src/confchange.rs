//! Membership changes: the change record carried in a log entry, its byte
//! encoding, and the pure arithmetic of applying it to a configuration —
//! simple single-voter changes, entering a joint configuration (C_old,new),
//! and leaving it (C_new).

use crate::limits::VOTERS_MAX;
use crate::quorum::{JointConfig, MajorityConfig};
use crate::types::{ConfState, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChangeOp {
    AddVoter = 0,
    AddLearner = 1,
    Remove = 2,
}

/// How a change moves through configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Transition {
    /// A single voter change applies directly; anything else goes through a
    /// joint configuration that is left automatically.
    Auto = 0,
    /// Always joint, left automatically once the joint entry is applied.
    JointImplicit = 1,
    /// Always joint, left only by an explicit empty change.
    JointExplicit = 2,
}

/// A membership change. An empty `changes` list means "leave the joint
/// configuration".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    pub transition: Transition,
    pub changes: Vec<(ChangeOp, NodeId)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("not the leader")]
    NotLeader,
    #[error("a membership change is still pending (index {0} not yet applied)")]
    Pending(u64),
    #[error("already in a joint configuration; only leaving it is allowed")]
    AlreadyJoint,
    #[error("not in a joint configuration: nothing to leave")]
    NotJoint,
    #[error("the change leaves no voters")]
    NoVoters,
    #[error("more than one voter changes; use a joint transition")]
    TooManyVoterChanges,
    #[error("node {0} appears twice in one change")]
    Duplicate(NodeId),
    #[error("node id 0 is not a valid member")]
    ZeroNode,
    #[error("the change would make the leader ({0}) a non-voter; transfer leadership first")]
    RemovesLeader(NodeId),
    #[error("learner {id} is {lag_entries} entries behind; promote it once it has caught up")]
    LearnerBehind { id: NodeId, lag_entries: u64 },
    #[error("the new configuration has no quorum of recently active voters")]
    LosesQuorum,
    #[error("more than {VOTERS_MAX} members")]
    TooManyMembers,
    #[error("malformed conf-change bytes: {0}")]
    Malformed(&'static str),
    #[error("leadership transfer in progress")]
    TransferInProgress,
}

impl ConfChange {
    pub fn leave_joint() -> ConfChange {
        ConfChange { transition: Transition::Auto, changes: Vec::new() }
    }

    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Bytes of the entry that carries this change: transition (1 byte), then
    /// per change: op (1 byte) and node id (8 bytes, little endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.changes.len() * 9);
        out.push(self.transition as u8);
        for (op, id) in &self.changes {
            out.push(*op as u8);
            out.extend_from_slice(&id.0.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ConfChange, ConfChangeError> {
        let (&transition, rest) = bytes.split_first().ok_or(ConfChangeError::Malformed("empty"))?;
        let transition = match transition {
            0 => Transition::Auto,
            1 => Transition::JointImplicit,
            2 => Transition::JointExplicit,
            _ => return Err(ConfChangeError::Malformed("unknown transition")),
        };
        if rest.len() % 9 != 0 {
            return Err(ConfChangeError::Malformed("length is not a whole number of changes"));
        }
        let mut changes = Vec::with_capacity(rest.len() / 9);
        for chunk in rest.chunks_exact(9) {
            let op = match chunk[0] {
                0 => ChangeOp::AddVoter,
                1 => ChangeOp::AddLearner,
                2 => ChangeOp::Remove,
                _ => return Err(ConfChangeError::Malformed("unknown operation")),
            };
            let id = NodeId(u64::from_le_bytes(chunk[1..9].try_into().expect("9-byte chunk")));
            changes.push((op, id));
        }
        Ok(ConfChange { transition, changes })
    }

    /// Whether this change enters a joint configuration (as opposed to a
    /// simple change or leaving one).
    pub fn enters_joint(&self, cs: &ConfState) -> bool {
        if self.is_leave_joint() {
            return false;
        }
        match self.transition {
            Transition::Auto => voter_changes(cs, &self.changes) > 1,
            Transition::JointImplicit | Transition::JointExplicit => true,
        }
    }
}

/// How many voters a list of changes adds or removes.
fn voter_changes(cs: &ConfState, changes: &[(ChangeOp, NodeId)]) -> usize {
    changes
        .iter()
        .filter(|(op, id)| {
            let is_voter = cs.voters.contains(id);
            match op {
                ChangeOp::AddVoter => !is_voter,
                ChangeOp::AddLearner | ChangeOp::Remove => is_voter,
            }
        })
        .count()
}

/// Applies `cc` to `cs` and returns the resulting configuration, or why it is
/// not a valid step from `cs`. Pure: the caller decides when it takes effect.
pub fn apply(cs: &ConfState, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
    let joint = !cs.voters_outgoing.is_empty();
    if cc.is_leave_joint() {
        if !joint {
            return Err(ConfChangeError::NotJoint);
        }
        return Ok(leave_joint(cs));
    }
    if joint {
        return Err(ConfChangeError::AlreadyJoint);
    }
    let mut seen: Vec<NodeId> = Vec::with_capacity(cc.changes.len());
    for (_, id) in &cc.changes {
        if id.is_none() {
            return Err(ConfChangeError::ZeroNode);
        }
        if seen.contains(id) {
            return Err(ConfChangeError::Duplicate(*id));
        }
        seen.push(*id);
    }
    let enters_joint = cc.enters_joint(cs);
    if !enters_joint && voter_changes(cs, &cc.changes) > 1 {
        return Err(ConfChangeError::TooManyVoterChanges);
    }
    let mut next = cs.clone();
    if enters_joint {
        next.voters_outgoing = cs.voters.clone();
        next.auto_leave = cc.transition != Transition::JointExplicit;
    }
    for (op, id) in &cc.changes {
        apply_one(&mut next, *op, *id, enters_joint);
    }
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVoters);
    }
    if next.voters.len() + next.learners.len() + next.learners_next.len() > VOTERS_MAX {
        return Err(ConfChangeError::TooManyMembers);
    }
    for v in [&mut next.voters, &mut next.learners, &mut next.learners_next] {
        v.sort_unstable();
    }
    check_invariants(&next);
    Ok(next)
}

fn apply_one(cs: &mut ConfState, op: ChangeOp, id: NodeId, joint: bool) {
    cs.voters.retain(|v| *v != id);
    cs.learners.retain(|v| *v != id);
    cs.learners_next.retain(|v| *v != id);
    match op {
        ChangeOp::AddVoter => cs.voters.push(id),
        // A voter of the outgoing half cannot be a learner at the same time:
        // it becomes one when the joint configuration is left.
        ChangeOp::AddLearner if joint && cs.voters_outgoing.contains(&id) => cs.learners_next.push(id),
        ChangeOp::AddLearner => cs.learners.push(id),
        ChangeOp::Remove => {}
    }
}

fn leave_joint(cs: &ConfState) -> ConfState {
    let mut next = cs.clone();
    next.learners.append(&mut next.learners_next);
    next.learners.sort_unstable();
    next.learners.dedup();
    next.voters_outgoing.clear();
    next.auto_leave = false;
    check_invariants(&next);
    next
}

/// A membership that breaks an invariant of every configuration raftcore
/// produces (`membership_fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipFault {
    #[error("no voters")]
    NoVoters,
    #[error("node id 0 in a configuration")]
    ZeroId,
    #[error("a list of more than {VOTERS_MAX} nodes")]
    TooMany,
    #[error("node {0} is listed twice")]
    Duplicate(NodeId),
    #[error("node {0} is both learner and voter")]
    LearnerAndVoter(NodeId),
    #[error("learner_next {0} is not an outgoing voter")]
    LearnerNextNotOutgoing(NodeId),
    #[error("learners_next outside a joint configuration")]
    LearnersNextOutsideJoint,
}

/// Checks the invariants of every configuration we produce: some voters,
/// no id 0, at most `VOTERS_MAX` per list, no node listed twice, voters and
/// learners disjoint, and learners_next only while joint, naming outgoing
/// voters. A snapshot from a peer is checked before it is installed.
pub fn membership_fault(cs: &ConfState) -> Option<MembershipFault> {
    let lists = [&cs.voters, &cs.voters_outgoing, &cs.learners, &cs.learners_next];
    if cs.voters.is_empty() {
        return Some(MembershipFault::NoVoters);
    }
    for list in lists {
        if list.len() > VOTERS_MAX {
            return Some(MembershipFault::TooMany);
        }
        for (i, id) in list.iter().enumerate() {
            if id.is_none() {
                return Some(MembershipFault::ZeroId);
            }
            if list[..i].contains(id) {
                return Some(MembershipFault::Duplicate(*id));
            }
        }
    }
    if let Some(l) = cs.learners.iter().find(|l| cs.voters.contains(l) || cs.voters_outgoing.contains(l)) {
        return Some(MembershipFault::LearnerAndVoter(*l));
    }
    if let Some(l) = cs.learners_next.iter().find(|l| !cs.voters_outgoing.contains(l)) {
        return Some(MembershipFault::LearnerNextNotOutgoing(*l));
    }
    if cs.voters_outgoing.is_empty() && !cs.learners_next.is_empty() {
        return Some(MembershipFault::LearnersNextOutsideJoint);
    }
    None
}

fn check_invariants(cs: &ConfState) {
    if let Some(fault) = membership_fault(cs) {
        panic!("{fault}");
    }
}

/// The voter halves of a configuration, as quorum arithmetic sees them.
pub fn joint_config(cs: &ConfState) -> JointConfig {
    JointConfig { incoming: MajorityConfig::new(cs.voters.clone()), outgoing: MajorityConfig::new(cs.voters_outgoing.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(voters: &[u64]) -> ConfState {
        ConfState { voters: voters.iter().map(|&v| NodeId(v)).collect(), ..Default::default() }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let cc = ConfChange { transition: Transition::JointExplicit, changes: vec![(ChangeOp::AddVoter, NodeId(4)), (ChangeOp::Remove, NodeId(1))] };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9]).is_err());
        assert!(ConfChange::decode(&[0, 1, 2]).is_err());
        assert!(ConfChange::decode(&[0, 7, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn simple_change_allows_one_voter_only() {
        let add = ConfChange { transition: Transition::Auto, changes: vec![(ChangeOp::AddVoter, NodeId(4))] };
        let next = apply(&cs(&[1, 2, 3]), &add).unwrap();
        assert_eq!(next.voters.len(), 4);
        assert!(next.voters_outgoing.is_empty());
        let two = ConfChange { transition: Transition::Auto, changes: vec![(ChangeOp::AddVoter, NodeId(4)), (ChangeOp::AddVoter, NodeId(5))] };
        let joint = apply(&cs(&[1, 2, 3]), &two).unwrap();
        assert_eq!(joint.voters_outgoing, cs(&[1, 2, 3]).voters);
        assert!(joint.auto_leave);
        assert_eq!(apply(&joint, &add), Err(ConfChangeError::AlreadyJoint));
        let left = apply(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(left.voters.len(), 5);
        assert!(left.voters_outgoing.is_empty());
    }

    #[test]
    fn demoting_an_outgoing_voter_waits_for_leave() {
        let cc = ConfChange { transition: Transition::JointExplicit, changes: vec![(ChangeOp::AddLearner, NodeId(3)), (ChangeOp::AddVoter, NodeId(4))] };
        let joint = apply(&cs(&[1, 2, 3]), &cc).unwrap();
        assert_eq!(joint.learners_next, vec![NodeId(3)]);
        assert!(joint.learners.is_empty());
        let left = apply(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(left.learners, vec![NodeId(3)]);
        assert_eq!(left.voters, cs(&[1, 2, 4]).voters);
    }

    #[test]
    fn refuses_empty_and_duplicate_changes() {
        let rm = ConfChange { transition: Transition::Auto, changes: vec![(ChangeOp::Remove, NodeId(1))] };
        assert_eq!(apply(&cs(&[1]), &rm), Err(ConfChangeError::NoVoters));
        let dup = ConfChange { transition: Transition::Auto, changes: vec![(ChangeOp::Remove, NodeId(1)), (ChangeOp::AddVoter, NodeId(1))] };
        assert_eq!(apply(&cs(&[1, 2]), &dup), Err(ConfChangeError::Duplicate(NodeId(1))));
        assert_eq!(apply(&cs(&[1, 2]), &ConfChange::leave_joint()), Err(ConfChangeError::NotJoint));
    }
}
