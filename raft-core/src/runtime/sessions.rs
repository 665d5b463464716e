//! The replicated client-session table (exactly-once commands, Raft dissertation §6.3). Every
//! decision depends only on log indexes, so all nodes agree on it.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::types::Index;

/// One client session (Raft dissertation §6.3): the highest sequence number applied and its
/// response, so a retry of that request is answered without applying it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) last_seq: u64,
    pub(crate) last_response: Bytes,
    /// Log index of the session's last use (opening counts); expiry is measured in log indexes.
    pub(crate) last_used: Index,
}

/// What a session command should do, decided deterministically from the replicated table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// Apply it.
    Fresh,
    /// Already applied: answer with this response.
    Duplicate(Bytes),
    /// Older than the last applied request: its response is gone.
    Stale { last_seq: u64 },
    /// The session does not exist or expired.
    Expired,
}

/// The replicated client-session table. Every decision depends only on log indexes, so all
/// nodes agree on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    pub(crate) table: BTreeMap<u64, Session>,
}

impl Sessions {
    /// Opens a session whose id is the log index of its opening entry. First drops sessions idle
    /// for more than `idle_entries`, then, if still full, the least recently used.
    pub(crate) fn open(&mut self, index: Index, max_sessions: usize, idle_entries: u64) -> u64 {
        self.table.retain(|_, s| s.last_used.saturating_add(idle_entries) >= index);
        while self.table.len() >= max_sessions.max(1) {
            let lru =
                self.table.iter().min_by_key(|(id, s)| (s.last_used, **id)).map(|(id, _)| *id);
            match lru {
                Some(id) => self.table.remove(&id),
                None => break,
            };
        }
        self.table
            .insert(index, Session { last_seq: 0, last_response: Bytes::new(), last_used: index });
        index
    }

    pub(crate) fn check(
        &self,
        client: u64,
        seq: u64,
        index: Index,
        idle_entries: u64,
    ) -> SessionCheck {
        match self.table.get(&client) {
            None => SessionCheck::Expired,
            Some(s) if s.last_used.saturating_add(idle_entries) < index => SessionCheck::Expired,
            Some(s) if seq == s.last_seq && seq != 0 => {
                SessionCheck::Duplicate(s.last_response.clone())
            }
            Some(s) if seq <= s.last_seq => SessionCheck::Stale { last_seq: s.last_seq },
            Some(_) => SessionCheck::Fresh,
        }
    }

    /// Records the response of a freshly applied request.
    pub(crate) fn record(&mut self, client: u64, seq: u64, index: Index, response: Bytes) {
        if let Some(s) = self.table.get_mut(&client) {
            s.last_seq = seq;
            s.last_response = response;
            s.last_used = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_deduplicate_and_expire_by_index() {
        let mut s = Sessions::default();
        let c = s.open(10, 8, 100);
        assert_eq!(c, 10);
        assert_eq!(s.check(c, 1, 11, 100), SessionCheck::Fresh);
        s.record(c, 1, 11, Bytes::from_static(b"r1"));
        assert_eq!(s.check(c, 1, 12, 100), SessionCheck::Duplicate(Bytes::from_static(b"r1")));
        assert_eq!(s.check(c, 0, 12, 100), SessionCheck::Stale { last_seq: 1 });
        assert_eq!(s.check(c, 2, 111, 100), SessionCheck::Fresh);
        assert_eq!(s.check(c, 2, 112, 100), SessionCheck::Expired);
        assert_eq!(s.check(99, 1, 12, 100), SessionCheck::Expired);
    }

    #[test]
    fn opening_evicts_idle_then_least_recently_used() {
        let mut s = Sessions::default();
        for i in 1..=3 {
            s.open(i, 3, 1000);
        }
        s.record(1, 1, 5, Bytes::new());
        s.open(6, 3, 1000);
        // Full at 3: session 2 (used at 2) is the least recently used.
        assert_eq!(s.table.keys().copied().collect::<Vec<_>>(), vec![1, 3, 6]);
        s.open(2000, 3, 1000);
        // 1 (used at 5), 3 and 6 are idle for more than 1000 entries.
        assert_eq!(s.table.keys().copied().collect::<Vec<_>>(), vec![2000]);
    }
}
