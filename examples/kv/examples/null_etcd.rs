//! A "null" etcd KV endpoint for measuring load generators: it answers every `Put`, `Range` and
//! `DeleteRange` at once, stores nothing and replicates nothing. Whatever throughput a client
//! reaches against it is that client's own ceiling on this machine.
//!
//! ```text
//! cargo run --release -p raft-kv --example null_etcd -- 127.0.0.1:23790 [more addresses...]
//! ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23790 check perf --load=l
//! ```
//!
//! BENCHMARKS.md uses it to show that `etcdctl check perf --load=l` cannot reach its target rate
//! on the 2-vCPU benchmark machine whatever the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use raft_kv::pb::etcdserverpb as pb;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct NullKv {
    revision: AtomicI64,
}

impl NullKv {
    fn header(&self) -> Option<pb::ResponseHeader> {
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        Some(pb::ResponseHeader { cluster_id: 1, member_id: 1, revision, raft_term: 1 })
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for NullKv {
    async fn range(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(pb::RangeResponse { header: self.header(), ..Default::default() }))
    }

    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(pb::PutResponse { header: self.header(), prev_kv: None }))
    }

    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Ok(Response::new(pb::DeleteRangeResponse { header: self.header(), ..Default::default() }))
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("the null server has no Txn"))
    }

    type RangeStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::RangeStreamResponse, Status>> + Send>,
    >;

    async fn range_stream(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("the null server has no RangeStream"))
    }

    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Ok(Response::new(pb::CompactionResponse { header: self.header() }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addrs: Vec<SocketAddr> =
        std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err("usage: null_etcd ADDRESS [ADDRESS...]".into());
    }
    let mut servers = tokio::task::JoinSet::new();
    for addr in addrs {
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(pb::kv_server::KvServer::new(NullKv::default()))
            .serve(addr);
        eprintln!("null etcd KV on {addr}");
        servers.spawn(server);
    }
    while let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}
