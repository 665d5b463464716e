//! Deterministic simulator, checkers and test helpers (feature `testkit`).
pub mod client;
pub mod harness;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod rng;
pub mod schedule;
pub mod sim;
pub mod storage_suite;
