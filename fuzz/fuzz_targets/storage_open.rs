//! Recovery of a raft-storage store from arbitrary bytes: catalogue values, segment files (raw or
//! valid-then-damaged) and snapshot files. Errors are expected, panics are findings; see
//! `raft_storage::fuzzing::recover_from_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raft_storage::fuzzing::recover_from_bytes(data));
