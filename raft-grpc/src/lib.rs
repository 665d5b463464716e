//! raft-grpc (see its issue).
