//! etcd services raft-kv does not implement (Watch, Lease, Auth): every call answers gRPC
//! `Unimplemented` with a message naming the service, at once (never a hang).

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

macro_rules! unimplemented_service {
    ($ty:ident, $name:literal, $what:literal) => {
        #[doc = concat!("Answers every `", $name, "` call with `Unimplemented`.")]
        #[derive(Clone, Copy, Debug, Default)]
        pub(crate) struct $ty;

        impl NamedService for $ty {
            const NAME: &'static str = $name;
        }

        impl tonic::codegen::Service<http::Request<Body>> for $ty {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, _: http::Request<Body>) -> Self::Future {
                let status = tonic::Status::unimplemented(concat!(
                    "raft-kv does not implement etcd's ",
                    $what,
                    " API (",
                    $name,
                    ")"
                ));
                std::future::ready(Ok(status.into_http()))
            }
        }
    };
}

unimplemented_service!(WatchService, "etcdserverpb.Watch", "watch");
unimplemented_service!(LeaseService, "etcdserverpb.Lease", "lease");
unimplemented_service!(AuthService, "etcdserverpb.Auth", "auth");
