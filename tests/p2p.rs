//! Real iroh endpoints on 127.0.0.1 (offline: no relays, no external lookup): joining by
//! ticket, peer discovery through hellos, blob replication on first read, bad peers.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, pseudo_random_bytes};
use jsonrpsee::core::ClientError;
use onvm::rpc_api::BlobId;
use onvm::rpc_api::api::{BlobApiClient, NodeApiClient, PeerApiClient};
use onvm::rpc_api::error as codes;

fn call_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> jsonrpsee::types::ErrorObjectOwned {
    match r {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a call error, got {other:?}"),
    }
}

async fn ticket(node: &TestNode) -> String {
    NodeApiClient::info(&node.client().await)
        .await
        .unwrap()
        .ticket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_by_ticket_and_a_blob_on_a_is_readable_on_c() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    // B joins A; C joins B only, and meets A through B's hello.
    let joined = PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    assert_eq!(joined.endpoint_id, a.node().endpoint_id());
    PeerApiClient::connect(&cc, ticket(&b).await).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = PeerApiClient::list(&cc).await.unwrap();
        if peers
            .iter()
            .any(|p| p.endpoint_id == a.node().endpoint_id())
        {
            break;
        }
        assert!(Instant::now() < deadline, "C never met A: {peers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A learned B from B's hello; the links are direct on loopback with a measured latency.
    let a_peers = PeerApiClient::list(&ca).await.unwrap();
    let b_on_a = a_peers
        .iter()
        .find(|p| p.endpoint_id == b.node().endpoint_id())
        .expect("A knows B");
    assert_eq!(b_on_a.network_id, "onvm-devnet");
    let a_on_b = PeerApiClient::list(&cb)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.endpoint_id == a.node().endpoint_id())
        .unwrap();
    assert_eq!(a_on_b.connection, "direct");
    assert!(a_on_b.latency_ms.is_some() && a_on_b.last_seen_ms > 0);

    // A blob uploaded on A is readable on C (fetched BAO-verified from A on first read).
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 7, 55);
    let status =
        BlobApiClient::upload_begin(&ca, data.len() as u64, Some("application/x-test".into()))
            .await
            .unwrap();
    let mut offset = 0u64;
    for piece in data.chunks(1024 * 1024) {
        BlobApiClient::upload_append(&ca, status.upload_id.clone(), offset, piece.to_vec().into())
            .await
            .unwrap();
        offset += piece.len() as u64;
    }
    let id = BlobApiClient::upload_finish(&ca, status.upload_id, None)
        .await
        .unwrap()
        .id;
    let stat = BlobApiClient::stat(&cc, id).await.unwrap();
    assert_eq!(stat.size, data.len() as u64);
    assert_eq!(stat.mime.as_deref(), Some("application/x-test"));
    let mut back = Vec::new();
    loop {
        let chunk = BlobApiClient::get(&cc, id, Some(back.len() as u64), Some(1024 * 1024))
            .await
            .unwrap();
        back.extend_from_slice(&chunk.data_base64.0);
        if chunk.eof {
            break;
        }
    }
    assert!(back == data, "bytes differ after replication");
    // C now holds it itself, and serves it on.
    assert_eq!(
        BlobApiClient::list(&cc, None, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let m = NodeApiClient::metrics(&cc).await.unwrap();
    assert_eq!(m.counters["blobs_fetched"], 1);
    // A blob no one has is still a clean not-found.
    let err = call_error(BlobApiClient::stat(&cc, BlobId::of(b"nobody has this")).await);
    assert_eq!(err.code(), codes::NOT_FOUND);
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_other_networks_and_self_dials_are_refused() {
    let a = TestNode::start().await;
    let other = TestNode::start_with(&["node.network_id=another-net"]).await;
    let ca = a.client().await;
    let err = call_error(PeerApiClient::connect(&ca, "not a ticket".into()).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    let err = call_error(PeerApiClient::connect(&ca, ticket(&a).await).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(err.message().contains("own"), "{}", err.message());
    let err = call_error(PeerApiClient::connect(&ca, ticket(&other).await).await);
    assert!(
        err.message().contains("another-net") || err.message().contains("onvm-devnet"),
        "{}",
        err.message()
    );
    assert!(
        PeerApiClient::list(&ca).await.unwrap().is_empty(),
        "no peer from another network"
    );
    a.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_peer_messages_are_dropped_without_harm() {
    use iroh::endpoint::presets;
    let a = TestNode::start().await;
    let addr: iroh_tickets::endpoint::EndpointTicket = ticket(&a).await.parse().unwrap();
    let ep = iroh::Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    let conn = ep
        .connect(addr.endpoint_addr().clone(), onvm::node::net::PEER_ALPN)
        .await
        .unwrap();
    // 1 MiB on a protocol whose messages are at most 64 KiB: the stream is reset.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&vec![7u8; 1024 * 1024]).await;
    let _ = send.finish();
    assert!(
        recv.read_to_end(1024).await.is_err(),
        "no answer to an oversized message"
    );
    // Garbage that does not decode: reset too.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\xff\xff\xff garbage").await.unwrap();
    send.finish().unwrap();
    assert!(recv.read_to_end(1024).await.is_err());
    // The node still answers real requests, on the same connection and over RPC.
    let ping = postcard::to_allocvec(&onvm::node::net::PeerRequest::Ping { nonce: 9 }).unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&ping).await.unwrap();
    send.finish().unwrap();
    let reply: onvm::node::net::PeerResponse =
        postcard::from_bytes(&recv.read_to_end(1024).await.unwrap()).unwrap();
    assert!(matches!(
        reply,
        onvm::node::net::PeerResponse::Pong { nonce: 9 }
    ));
    assert!(
        NodeApiClient::health(&a.client().await)
            .await
            .unwrap()
            .ready
    );
    ep.close().await;
    a.stop().await;
}
