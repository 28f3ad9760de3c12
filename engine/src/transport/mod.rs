//! Node-to-node transport: the wire format of peer frames and the TCP links
//! between core `k` of every node.

pub mod peer;
pub mod wire;
