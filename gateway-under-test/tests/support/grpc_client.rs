//! A tonic client for Istio's echo.proto (`EchoRequest{string message = 1}` ->
//! `EchoResponse{string message = 1}`), the messages written out (no code generation needed).

use std::net::SocketAddr;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The codec of the echo messages.
pub fn echo_codec() -> tonic_prost::ProstCodec<EchoRequest, EchoResponse> {
    tonic_prost::ProstCodec::default()
}

/// A ready gRPC client over h2c to `addr`.
pub async fn channel(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

/// A unary call of `path` with message "hello" and the metadata `meta`: the reply's message.
pub async fn echo_call(
    addr: SocketAddr,
    path: &'static str,
    meta: &[(&'static str, &str)],
) -> Result<String, tonic::Status> {
    let mut grpc = channel(addr).await;
    let mut req = tonic::Request::new(EchoRequest {
        message: "hello".into(),
    });
    for (k, v) in meta {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(req, path, echo_codec())
        .await
        .map(|r| r.into_inner().message)
}
