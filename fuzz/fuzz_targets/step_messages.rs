//! One node fed arbitrary ticks, proposals, reads, restarts and messages; see
//! `raft_core::fuzzing::step_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raft_core::fuzzing::step_messages(data));
