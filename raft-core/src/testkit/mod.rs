//! Deterministic simulator, checkers and test helpers (feature `testkit`).
pub mod linearizability;
pub mod harness;
