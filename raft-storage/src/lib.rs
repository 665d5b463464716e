//! raft-storage (see its issue).
