//! A simulated three-node cluster under an arbitrary schedule of deliveries, faults and client
//! requests; see `raft_core::fuzzing::sim_schedule`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raft_core::fuzzing::sim_schedule(data));
