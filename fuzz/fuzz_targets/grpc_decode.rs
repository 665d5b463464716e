//! Arbitrary bytes decoded as every raft-grpc wire message and run through the same conversions
//! and snapshot reassembly the transport applies; see `raft_grpc::fuzzing::decode_all`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| raft_grpc::fuzzing::decode_all(data));
