//! Quorum arithmetic, pure: the value a majority has reached (commit index,
//! acknowledged heartbeat round) and the outcome of an election, for a simple
//! majority and for a joint configuration (both majorities must agree).

use crate::types::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Pending,
    Lost,
    Won,
}

/// A set of voters, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: Vec<NodeId>,
}

impl MajorityConfig {
    pub fn new(mut voters: Vec<NodeId>) -> MajorityConfig {
        voters.sort_unstable();
        voters.dedup();
        assert!(voters.iter().all(|v| !v.is_none()), "node id 0 in a configuration");
        MajorityConfig { voters }
    }

    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// The largest value that a majority of voters has reached, given each
    /// voter's value (0 when unknown). An empty configuration reaches
    /// `u64::MAX`, so that it never holds back a joint configuration.
    pub fn quorum_value(&self, value_of: impl Fn(NodeId) -> u64) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        let mut stack = [0u64; 8];
        let mut heap;
        let values: &mut [u64] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap = vec![0u64; n];
            &mut heap[..]
        };
        for (slot, id) in values.iter_mut().zip(&self.voters) {
            *slot = value_of(*id);
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[n / 2]
    }

    /// The election outcome given each voter's answer (`None`: no answer yet).
    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for id in &self.voters {
            match vote_of(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// The configuration during a membership change: decisions need a majority
/// of `incoming` and, while joint, of `outgoing` too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half, once each, sorted.
    pub fn ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.incoming.voters().iter().chain(self.outgoing.voters()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn quorum_value(&self, value_of: impl Fn(NodeId) -> u64) -> u64 {
        self.incoming.quorum_value(&value_of).min(self.outgoing.quorum_value(&value_of))
    }

    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let a = self.incoming.vote_result(&vote_of);
        let b = self.outgoing.vote_result(&vote_of);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn majority_value_is_the_median_reached_by_a_quorum() {
        let c = MajorityConfig::new(ids(&[1, 2, 3]));
        assert_eq!(c.quorum_value(|id| [0, 5, 7, 9][id.0 as usize]), 7);
        let c = MajorityConfig::new(ids(&[1, 2, 3, 4]));
        assert_eq!(c.quorum_value(|id| [0, 5, 7, 9, 1][id.0 as usize]), 5);
        assert_eq!(MajorityConfig::default().quorum_value(|_| 3), u64::MAX);
    }

    #[test]
    fn joint_value_is_the_minimum_of_both_halves() {
        let j = JointConfig { incoming: MajorityConfig::new(ids(&[1, 2, 3])), outgoing: MajorityConfig::new(ids(&[3, 4, 5])) };
        let v = |id: NodeId| [0, 10, 10, 10, 1, 1][id.0 as usize];
        assert_eq!(j.quorum_value(v), 1);
        let v = |id: NodeId| [0, 10, 10, 10, 10, 1][id.0 as usize];
        assert_eq!(j.quorum_value(v), 10);
    }

    #[test]
    fn votes_win_lose_or_wait() {
        let c = MajorityConfig::new(ids(&[1, 2, 3]));
        assert_eq!(c.vote_result(|id| (id.0 == 1).then_some(true)), VoteResult::Pending);
        assert_eq!(c.vote_result(|id| (id.0 <= 2).then_some(true)), VoteResult::Won);
        assert_eq!(c.vote_result(|id| Some(id.0 == 1)), VoteResult::Lost);
        let j = JointConfig { incoming: c.clone(), outgoing: MajorityConfig::new(ids(&[4, 5, 6])) };
        assert_eq!(j.vote_result(|id| (id.0 <= 2).then_some(true)), VoteResult::Pending);
        assert_eq!(j.vote_result(|id| Some(id.0 <= 2)), VoteResult::Lost);
        assert_eq!(j.vote_result(|id| Some(id.0 <= 2 || id.0 >= 5)), VoteResult::Won);
    }
}
