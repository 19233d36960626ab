//! A tonic client over tcpd: `tcpd_client::connector::Connector::channel`
//! (feature `tonic`) carries a gRPC channel on a tcpd `TcpStream` to a tonic
//! server on the kernel side of the TUN.
//!
//! The server is tonic's own server-reflection service (no .proto of our
//! own to compile): the client asks it to list its services over the
//! bidirectional `ServerReflectionInfo` RPC, several times in a row and
//! several at once on one channel (HTTP/2 streams multiplexed on one tcpd
//! connection).

use std::time::Duration;

use tcpd_e2e::{Env, HOST_ADDR};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

const PORT: u16 = 7951;

/// The services the reflection server at the other end of `channel` lists.
async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("ServerReflectionInfo through tcpd")
        .into_inner();
    let ServerReflectionResponse {
        message_response, ..
    } = responses
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    match message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[test]
fn a_tonic_client_over_tcpd_reaches_a_kernel_side_tonic_server() {
    let Some(env) = Env::setup("tonic-conn", &[]) else {
        return;
    };
    // The kernel-side server: tonic, in the namespace, on its own runtime.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = env.ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind((HOST_ADDR, PORT))
                .await
                .expect("listen");
            ready_tx.send(()).expect("ready");
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tcpd_proto::FILE_DESCRIPTOR_SET)
                .build_v1()
                .expect("reflection service");
            tonic::transport::Server::builder()
                .add_service(reflection)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                )
                .await
                .expect("tonic server");
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server ready");
    let rt = tcpd_e2e::runtime();
    let uri = format!("http://{HOST_ADDR}:{PORT}");
    let socket = env.daemon.socket();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let client = tcpd_client::Client::connect(socket).await.expect("session");
            let channel = tcpd_client::connector::Connector::with_client(client)
                .channel(&uri)
                .await
                .expect("tonic channel through tcpd");
            for _ in 0..5 {
                let services = list_services(channel.clone()).await;
                assert!(
                    services.iter().any(|s| s == "tcpd.v2.SocketService"),
                    "services listed: {services:?}"
                );
            }
            // Several calls at once on the one connection (HTTP/2 streams).
            let calls: Vec<_> = (0..8)
                .map(|_| tokio::spawn(list_services(channel.clone())))
                .collect();
            for call in calls {
                let services = call.await.expect("call task");
                assert!(services.iter().any(|s| s == "tcpd.v2.AdminService"));
            }
        })
        .await
        .expect("tonic calls through tcpd in time");
    });
    drop(rt);
    let _ = stop_tx.send(());
    server.join().expect("server thread");
}
