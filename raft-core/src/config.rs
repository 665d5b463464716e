//! Node configuration and its validation.

use crate::error::ConfigError;
use crate::types::NodeId;

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ReadMode {
    /// ReadIndex (§6.4 of the dissertation): the leader confirms it is still leader with a round of
    /// heartbeats acknowledged by a quorum before answering. Safe whatever the clocks do.
    #[default]
    ReadIndex,
    /// Lease reads (§6.4.1): while a quorum acknowledged a heartbeat round recently enough, the leader
    /// answers without a new round. Safe only if clocks drift less than
    /// `lease_clock_drift_percent`; requires `check_quorum`.
    Lease,
}

/// Configuration of one Raft node. All limits live here; [`Config::validate`] checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Base election timeout in ticks. A follower's actual timeout is drawn uniformly from
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)`. It is also the leader lease: a node
    /// that heard from a leader within it refuses votes, and a leader that has not heard from a quorum
    /// within it steps down (CheckQuorum).
    pub election_timeout_ticks: u32,
    /// Ticks between leader heartbeats.
    pub heartbeat_interval_ticks: u32,
    /// PreVote (§9.6): a candidate first asks whether it could win, without raising its term.
    pub pre_vote: bool,
    /// CheckQuorum: a leader that has not heard from a quorum within an election timeout steps down.
    pub check_quorum: bool,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// Bound on the relative clock-rate difference between nodes, in percent. A lease lasts
    /// `election_timeout_ticks * 100 / (100 + lease_clock_drift_percent)` ticks, counted from the
    /// *sending* of the heartbeat round a quorum acknowledged, minus one tick for tick granularity.
    pub lease_clock_drift_percent: u32,
    /// Most append messages in flight to one follower while replicating.
    pub max_inflight_msgs: usize,
    /// Bytes of entries in flight to one follower at which the leader stops sending more while
    /// replicating (the message that crosses it is still sent, so the window exceeds it by at most
    /// one message of `max_append_bytes`).
    pub max_inflight_bytes: u64,
    /// Most bytes of entries in one append message (at least one entry is always sent).
    pub max_append_bytes: u64,
    /// Most entries in one append message.
    pub max_append_entries: usize,
    /// Most bytes appended by a leader and not yet committed; proposals beyond are refused.
    pub max_uncommitted_bytes: u64,
    /// Largest single proposal payload.
    pub max_proposal_bytes: u64,
    /// Most bytes of committed entries handed out for applying in one `Ready`.
    pub max_apply_bytes: u64,
    /// Most reads waiting for confirmation or for the leader's first commit in its term.
    pub max_pending_reads: usize,
    /// Most committed entries handed out for applying and not yet acknowledged with
    /// `Raft::on_applied`: bounds the queue between the core and a slow state machine.
    pub max_unapplied_entries: u64,
    /// Forward proposals from followers to the leader (otherwise they get `NotLeader`).
    pub forward_proposals: bool,
    /// Seed for the randomized election timeout. Give every node a different seed.
    pub seed: u64,
}

impl Config {
    /// A configuration with safe defaults for node `id`: 10-tick election timeout, 1-tick
    /// heartbeat, PreVote, CheckQuorum and ReadIndex reads on. The seed defaults to the id.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            lease_clock_drift_percent: 10,
            max_inflight_msgs: 256,
            max_inflight_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            max_append_entries: 4096,
            max_uncommitted_bytes: 64 << 20,
            max_proposal_bytes: 1 << 20,
            max_apply_bytes: 16 << 20,
            max_pending_reads: 65_536,
            max_unapplied_entries: 65_536,
            forward_proposals: true,
            seed: id,
        }
    }

    /// Lease length in ticks (see [`Config::lease_clock_drift_percent`]).
    pub fn lease_ticks(&self) -> u64 {
        let t = u64::from(self.election_timeout_ticks) * 100
            / (100 + u64::from(self.lease_clock_drift_percent));
        t.saturating_sub(1)
    }

    /// Checks every field and every cross-field rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(field: &'static str, rule: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError { field, rule: rule.into() })
        }
        if self.id == 0 {
            return err("id", "must be non-zero (0 means \"no node\")");
        }
        if self.heartbeat_interval_ticks == 0 {
            return err("heartbeat_interval_ticks", "must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return err(
                "election_timeout_ticks",
                format!(
                    "must be greater than heartbeat_interval_ticks ({} <= {})",
                    self.election_timeout_ticks, self.heartbeat_interval_ticks
                ),
            );
        }
        if self.election_timeout_ticks > 1_000_000 {
            return err("election_timeout_ticks", "must be at most 1,000,000");
        }
        if self.read_mode == ReadMode::Lease {
            if !self.check_quorum {
                return err(
                    "read_mode",
                    "Lease reads require check_quorum (a leader must step down when its lease may have expired)",
                );
            }
            if self.lease_clock_drift_percent == 0 {
                return err(
                    "lease_clock_drift_percent",
                    "Lease reads require a non-zero clock-drift bound",
                );
            }
            if self.lease_ticks() == 0 {
                return err(
                    "lease_clock_drift_percent",
                    "leaves a lease of zero ticks; raise election_timeout_ticks or lower the drift bound",
                );
            }
        }
        if self.lease_clock_drift_percent > 100 {
            return err("lease_clock_drift_percent", "must be at most 100");
        }
        let nonzero: [(&'static str, u64); 9] = [
            ("max_unapplied_entries", self.max_unapplied_entries),
            ("max_inflight_msgs", self.max_inflight_msgs as u64),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_append_bytes", self.max_append_bytes),
            ("max_append_entries", self.max_append_entries as u64),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("max_proposal_bytes", self.max_proposal_bytes),
            ("max_apply_bytes", self.max_apply_bytes),
            ("max_pending_reads", self.max_pending_reads as u64),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return err(field, "must be at least 1");
            }
        }
        if self.max_proposal_bytes > self.max_uncommitted_bytes {
            return err(
                "max_proposal_bytes",
                "must not exceed max_uncommitted_bytes (such a proposal could never be accepted)",
            );
        }
        if self.max_append_bytes > self.max_inflight_bytes {
            return err("max_append_bytes", "must not exceed max_inflight_bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_split_brain_protection_is_on() {
        let c = Config::new(1);
        c.validate().unwrap();
        assert!(c.pre_vote && c.check_quorum);
        assert_eq!(c.read_mode, ReadMode::ReadIndex);
    }

    #[test]
    fn lease_reads_require_check_quorum_and_drift_bound() {
        let mut c = Config::new(1);
        c.read_mode = ReadMode::Lease;
        c.validate().unwrap();
        c.check_quorum = false;
        assert_eq!(c.validate().unwrap_err().field, "read_mode");
        c.check_quorum = true;
        c.lease_clock_drift_percent = 0;
        assert_eq!(c.validate().unwrap_err().field, "lease_clock_drift_percent");
    }

    #[test]
    fn lease_is_shortened_by_drift_bound() {
        let mut c = Config::new(1);
        c.election_timeout_ticks = 110;
        c.lease_clock_drift_percent = 10;
        assert_eq!(c.lease_ticks(), 99);
    }

    #[test]
    fn cross_field_rules() {
        let mut c = Config::new(0);
        assert_eq!(c.validate().unwrap_err().field, "id");
        c = Config::new(1);
        c.election_timeout_ticks = 1;
        assert_eq!(c.validate().unwrap_err().field, "election_timeout_ticks");
        c = Config::new(1);
        c.max_proposal_bytes = c.max_uncommitted_bytes + 1;
        assert_eq!(c.validate().unwrap_err().field, "max_proposal_bytes");
        c = Config::new(1);
        c.max_inflight_msgs = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_inflight_msgs");
        c = Config::new(1);
        c.max_append_bytes = c.max_inflight_bytes + 1;
        assert_eq!(c.validate().unwrap_err().field, "max_append_bytes");
    }
}
