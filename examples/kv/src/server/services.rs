//! etcd's KV, Cluster and Maintenance services on top of the Raft node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::Role;
use raft_core::runtime::{Node, NodeError, ReadConsistency};
use tonic::{Request, Response, Status};

use super::convert::{self, Header, node_status, store_status};
use super::sm::{MemberMeta, QUERY_RANGE, QUERY_STATS, Stats};
use crate::cli::{Url, member_id_at};
use crate::pb::etcdserverpb as pb;
use crate::store::{self, CommandResponse};

/// The version `Status` reports: the etcd API level raft-kv speaks.
pub(crate) const VERSION: &str = "3.4.23";

/// What every service needs.
pub(crate) struct Ctx {
    pub(crate) node: Node,
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) token: String,
    pub(crate) max_txn_ops: usize,
}

impl Ctx {
    pub(crate) fn new(
        node: Node,
        cluster_id: u64,
        member_id: u64,
        token: String,
        max_txn_ops: usize,
    ) -> Ctx {
        Ctx { node, cluster_id, member_id, token, max_txn_ops }
    }

    fn header(&self) -> Header {
        Header {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            raft_term: self.node.term(),
        }
    }

    async fn write(&self, command: store::Command) -> Result<(Header, CommandResponse), Status> {
        let bytes = self.node.propose(command.encode()).await.map_err(|e| node_status(&e))?;
        let response = CommandResponse::decode(&bytes).map_err(|e| store_status(&e))?;
        if let CommandResponse::Error(e) = &response {
            return Err(store_status(e));
        }
        Ok((self.header(), response))
    }

    async fn range(
        &self,
        req: store::RangeRequest,
        serializable: bool,
    ) -> Result<store::RangeResponse, Status> {
        let mut query = vec![QUERY_RANGE];
        query.extend_from_slice(&req.encode());
        let consistency =
            if serializable { ReadConsistency::Stale } else { ReadConsistency::Linearizable };
        let bytes = self.node.read(consistency, query).await.map_err(|e| node_status(&e))?;
        match CommandResponse::decode(&bytes).map_err(|e| store_status(&e))? {
            CommandResponse::Range(r) => Ok(r),
            CommandResponse::Error(e) => Err(store_status(&e)),
            _ => Err(Status::internal("unexpected query response")),
        }
    }

    pub(crate) async fn stats(&self) -> Result<Stats, Status> {
        let bytes = self
            .node
            .read(ReadConsistency::Stale, Bytes::from_static(&[QUERY_STATS]))
            .await
            .map_err(|e| node_status(&e))?;
        Stats::decode(&bytes).ok_or_else(|| Status::internal("malformed stats"))
    }

    fn members(&self) -> Vec<pb::Member> {
        let status = self.node.status();
        let cs = &status.conf_state;
        let table = self.node.members();
        cs.members()
            .into_iter()
            .map(|id| {
                let m = table.get(&id);
                let meta = m.map(|m| MemberMeta::decode(&m.meta)).unwrap_or_default();
                let peer_urls = if meta.peer_urls.is_empty() {
                    m.map(|m| vec![m.addr.clone()]).unwrap_or_default()
                } else {
                    meta.peer_urls
                };
                pb::Member {
                    id,
                    name: meta.name,
                    peer_ur_ls: peer_urls,
                    client_ur_ls: meta.client_urls,
                    is_learner: cs.learners.contains(&id) || cs.learners_next.contains(&id),
                }
            })
            .collect()
    }
}

/// etcd's KV service.
pub(crate) struct KvService(pub(crate) Arc<Ctx>);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = request.into_inner();
        let serializable = r.serializable;
        let resp = self.0.range(convert::range_request(r), serializable).await?;
        Ok(Response::new(convert::range_response(&self.0.header(), resp)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let cmd = store::Command::Put(convert::put_request(request.into_inner()));
        match self.0.write(cmd).await? {
            (h, CommandResponse::Put(r)) => Ok(Response::new(convert::put_response(&h, r))),
            _ => Err(Status::internal("unexpected put response")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let cmd = store::Command::DeleteRange(convert::delete_request(request.into_inner()));
        match self.0.write(cmd).await? {
            (h, CommandResponse::DeleteRange(r)) => {
                Ok(Response::new(convert::delete_response(&h, r)))
            }
            _ => Err(Status::internal("unexpected delete response")),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let t = request.into_inner();
        let max = self.0.max_txn_ops;
        if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
            return Err(Status::invalid_argument("etcdserver: too many operations in txn request"));
        }
        let cmd = store::Command::Txn(convert::txn_request(t)?);
        match self.0.write(cmd).await? {
            (h, CommandResponse::Txn(r)) => Ok(Response::new(convert::txn_response(&h, r))),
            _ => Err(Status::internal("unexpected txn response")),
        }
    }

    type RangeStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::RangeStreamResponse, Status>> + Send>,
    >;

    async fn range_stream(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        unimplemented("KV.RangeStream")
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        let cmd = store::Command::Compact(store::CompactionRequest { revision });
        match self.0.write(cmd).await? {
            (h, CommandResponse::Compact(r)) => {
                Ok(Response::new(pb::CompactionResponse { header: h.at(r.revision) }))
            }
            _ => Err(Status::internal("unexpected compaction response")),
        }
    }
}

/// etcd's Cluster service, mapped onto Raft membership changes, on any member (the library
/// forwards the changes to the leader).
pub(crate) struct ClusterService(pub(crate) Arc<Ctx>);

fn parse_urls(urls: &[String]) -> Result<Vec<Url>, Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument("etcdserver: peer URLs must not be empty"));
    }
    urls.iter()
        .map(|u| Url::parse(u).map_err(|e| Status::invalid_argument(e.to_string())))
        .collect()
}

impl ClusterService {
    fn list(&self, revision: i64) -> pb::MemberListResponse {
        pb::MemberListResponse { header: self.0.header().at(revision), members: self.0.members() }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = request.into_inner();
        let urls = parse_urls(&r.peer_ur_ls)?;
        let taken: Vec<String> = self.0.members().into_iter().flat_map(|m| m.peer_ur_ls).collect();
        if r.peer_ur_ls.iter().any(|u| taken.contains(u)) {
            return Err(Status::failed_precondition("etcdserver: Peer URLs already exists"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let id = member_id_at(&urls, &self.0.token, Some(now));
        let meta = MemberMeta {
            name: String::new(),
            peer_urls: r.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        let (node, addr, meta) = (&self.0.node, r.peer_ur_ls[0].clone(), meta.encode());
        // A voter joins as a learner and the leader promotes it once it has caught up (so a new
        // member never weakens the quorum while it copies the log); `member add` returns at
        // once, since the new member starts only after it.
        let added = if r.is_learner {
            node.add_learner(id, addr, meta).await
        } else {
            node.add_voter_later(id, addr, meta).await
        };
        added.map_err(|e| node_status(&e))?;
        let member = pb::Member {
            id,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        let list = self.list(0);
        Ok(Response::new(pb::MemberAddResponse {
            header: list.header,
            member: Some(member),
            members: list.members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        if !self.0.members().iter().any(|m| m.id == id) {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        self.0.node.remove(id).await.map_err(|e| node_status(&e))?;
        let list = self.list(0);
        Ok(Response::new(pb::MemberRemoveResponse { header: list.header, members: list.members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        parse_urls(&r.peer_ur_ls)?;
        let Some(current) = self.0.node.members().get(&r.id).cloned() else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        let mut meta = MemberMeta::decode(&current.meta);
        meta.peer_urls = r.peer_ur_ls.clone();
        self.0
            .node
            .set_member(r.id, r.peer_ur_ls[0].clone(), meta.encode())
            .await
            .map_err(|e| node_status(&e))?;
        let list = self.list(0);
        Ok(Response::new(pb::MemberUpdateResponse { header: list.header, members: list.members }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.0.node.read_barrier().await.map_err(|e| node_status(&e))?;
        }
        Ok(Response::new(self.list(0)))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        match self.0.members().iter().find(|m| m.id == id) {
            None => return Err(Status::not_found("etcdserver: member not found")),
            Some(m) if !m.is_learner => {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member",
                ));
            }
            Some(_) => {}
        }
        self.0.node.promote(id).await.map_err(|e| node_status(&e))?;
        let list = self.list(0);
        Ok(Response::new(pb::MemberPromoteResponse { header: list.header, members: list.members }))
    }
}

/// Publishes this member's name and client URLs in the log once it is part of the cluster and
/// caught up (etcd publishes its attributes the same way).
pub(crate) async fn publish_self(
    ctx: Arc<Ctx>,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
) {
    let id = ctx.member_id;
    loop {
        let s = ctx.node.status();
        if s.stopped.is_some() {
            return;
        }
        let member = ctx.node.members().get(&id).cloned();
        let current = member.as_ref().map(|m| MemberMeta::decode(&m.meta)).unwrap_or_default();
        if current.name == name
            && current.client_urls == client_urls
            && current.peer_urls == peer_urls
        {
            return;
        }
        let in_conf = s.conf_state.voters.contains(&id) || s.conf_state.learners.contains(&id);
        if in_conf && s.leader.is_some() && s.applied_index >= s.commit_index {
            let meta = MemberMeta {
                name: name.clone(),
                peer_urls: peer_urls.clone(),
                client_urls: client_urls.clone(),
            };
            match ctx.node.set_member(id, peer_urls[0].clone(), meta.encode()).await {
                Ok(()) => {
                    tracing::info!(member = format!("{id:x}"), name, "published member attributes");
                    return;
                }
                Err(NodeError::ShuttingDown) => return,
                Err(e) => tracing::debug!(error = %e, "publishing member attributes; will retry"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// etcd's Maintenance service: `Status`, `Defragment`, `Alarm`, `MoveLeader`; the rest answer
/// `Unimplemented`.
pub(crate) struct MaintenanceService(pub(crate) Arc<Ctx>);

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("raft-kv does not implement {what}")))
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(pb::AlarmResponse { header: self.0.header().at(0), alarms: Vec::new() }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let stats = self.0.stats().await?;
        let s = self.0.node.status();
        Ok(Response::new(pb::StatusResponse {
            header: self.0.header().at(stats.revision),
            version: VERSION.into(),
            db_size: stats.db_size as i64,
            db_size_in_use: stats.db_size as i64,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            is_learner: s.conf_state.learners.contains(&self.0.member_id),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // sled compacts its files by itself; there is nothing to do, and nothing to fail.
        Ok(Response::new(pb::DefragmentResponse { header: self.0.header().at(0) }))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        unimplemented("Maintenance.Hash")
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        unimplemented("Maintenance.HashKV")
    }

    type SnapshotStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>,
    >;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        unimplemented("Maintenance.Snapshot (etcdctl snapshot save)")
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if self.0.node.status().role != Role::Leader {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        self.0.node.transfer_leadership(target).await.map_err(|e| node_status(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse { header: self.0.header().at(0) }))
    }

    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        unimplemented("Maintenance.Downgrade")
    }
}
