//! The same wasm and salt deployed on two nodes at the same moment: program ids bind the
//! deployer (docs/PROTOCOL.md, "Program id"), so this makes two programs, each with its own
//! home, and never one id with two manifests. Writes to both, through every node, converge
//! to the same DAG and the same roots everywhere, nothing is refused and nobody is banned.

mod common;

use common::{TestNode, converge, program_wasm};
use jsonrpsee::ws_client::WsClient;
use onvm::rpc_api::ProgramId;
use onvm::rpc_api::api::{DagApiClient, PeerApiClient, ProgramApiClient};
use onvm::rpc_api::program::{DeployRequest, ExecuteOptions};

async fn deploy(client: &WsClient) -> onvm::rpc_api::program::DeployResult {
    ProgramApiClient::deploy(
        client,
        DeployRequest {
            wasm_base64: Some(program_wasm("kvstore").into()),
            salt: "same-salt".into(),
            ..Default::default()
        },
    )
    .await
    .expect("deploy")
}

async fn put(client: &WsClient, p: ProgramId, key: &str) {
    let input =
        serde_json::to_vec(&serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}))
            .unwrap();
    ProgramApiClient::execute(
        client,
        p,
        input.into(),
        Some(ExecuteOptions {
            request_id: Some(key.into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("put {key} on {p}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wasm_and_salt_deployed_on_two_nodes_at_once_never_splits_the_network() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    common::join(&a, &[&b, &c]).await;
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);

    let (on_a, on_b) = tokio::join!(deploy(&ca), deploy(&cb));
    assert!(
        on_a.created && on_b.created,
        "both deploys are new programs"
    );
    assert_ne!(on_a.program_id, on_b.program_id, "ids bind the deployer");
    assert_eq!(on_a.manifest.manifest.code, on_b.manifest.manifest.code);
    assert_eq!(
        on_a.manifest.manifest.deployer.to_string(),
        a.node().endpoint_id()
    );
    assert_eq!(
        on_b.manifest.manifest.deployer.to_string(),
        b.node().endpoint_id()
    );
    // Deploying again on the same node is idempotent.
    let again = deploy(&ca).await;
    assert_eq!((again.program_id, again.created), (on_a.program_id, false));
    converge(&[&a, &b, &c]).await;

    // Writes on both programs, through every node, concurrently.
    let programs = [on_a.program_id, on_b.program_id];
    let mut writes = tokio::task::JoinSet::new();
    for (pi, p) in programs.into_iter().enumerate() {
        for (ci, node) in [&a, &b, &c].into_iter().enumerate() {
            let url = node.url();
            writes.spawn(async move {
                put(&common::ws_client(&url).await, p, &format!("p{pi}-via{ci}")).await
            });
        }
    }
    while let Some(done) = writes.join_next().await {
        done.expect("write task");
    }
    converge(&[&a, &b, &c]).await;

    let clients = [&ca, &cb, &cc];
    for p in programs {
        let home = ProgramApiClient::info(&ca, p).await.unwrap();
        assert_eq!(home.height, 3);
        for client in clients {
            let info = ProgramApiClient::info(client, p).await.unwrap();
            assert_eq!((info.height, info.state_root), (3, home.state_root));
        }
    }
    for client in clients {
        let heads = DagApiClient::heads(client).await.unwrap();
        assert!(heads.refused.is_empty(), "{:?}", heads.refused);
        assert_eq!(heads.deferred, 0);
        for peer in PeerApiClient::list(client).await.unwrap() {
            assert_eq!(peer.rejected, 0, "{peer:?}");
        }
    }
    for n in [a, b, c] {
        n.stop().await;
    }
}
