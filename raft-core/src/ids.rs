//! The primitive identifiers every module shares (a leaf: it imports nothing).

/// A node's identity inside one cluster. `0` is reserved for "none".
pub type NodeId = u64;
/// A Raft term (§5.1).
pub type Term = u64;
/// A log index; the first real entry has index 1, index 0 is the empty prefix.
pub type Index = u64;
