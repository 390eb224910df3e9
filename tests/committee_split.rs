//! Two live leaders whose votes split, resolved by a PBFT view change (issue 11). A partition
//! cuts the program's home (member 0, leader of view 0) off from two of its three members
//! while calls arrive on both sides: the home proposes its call but gathers only two of the
//! three votes it needs; the cut-off members time out, change view, and the view-1 leader gets
//! the other call decided. The home's call then follows at the next height. Both commit once,
//! neither under the home's lost proposal, and after the partition heals the home takes part
//! again and every node holds the same state.

mod common;

use std::time::Instant;

use common::{TestNode, converge, ticket};
use onvm::rpc_api::api::{PeerApiClient, ProgramApiClient};
use onvm::rpc_api::committee::VerifiedCommittee;
use onvm::rpc_api::program::ExecuteOptions;

fn put(key: &str) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}))
        .unwrap()
        .into()
}

fn request(id: &str) -> Option<ExecuteOptions> {
    Some(ExecuteOptions {
        request_id: Some(id.into()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_leaders_split_by_a_partition_resolve_by_a_view_change() {
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let d = TestNode::start().await;
    // A exchanges no committee messages with C and D (the DAG still flows: only consensus is cut).
    let partition = format!(
        "committee.debug_partition=[\"{}\", \"{}\"]",
        c.node().endpoint_id(),
        d.node().endpoint_id()
    );
    let mut a = TestNode::start_with(&[partition.as_str()]).await;
    for n in [&b, &c, &d] {
        PeerApiClient::connect(&n.client().await, ticket(&a).await)
            .await
            .unwrap();
    }
    converge(&[&a, &b, &c, &d]).await;
    let p = common::deploy_kvstore(&a.client().await, Some(4)).await;
    converge(&[&a, &b, &c, &d]).await;
    let committee = ProgramApiClient::committee(&a.client().await, p)
        .await
        .unwrap();
    let home = a.node().endpoint_id();
    assert_eq!(committee.members[0].endpoint_id.to_string(), home);

    // Both sides get a call at once: A leads view 0 and proposes x; C's call y cannot reach it.
    let started = Instant::now();
    let (ca, cc) = (a.client().await, c.client().await);
    let (x, y) = tokio::join!(
        ProgramApiClient::execute(&ca, p, put("x"), request("x")),
        ProgramApiClient::execute(&cc, p, put("y"), request("y")),
    );
    println!("both calls answered after {:?}", started.elapsed());
    let (x, y) = (x.unwrap().receipt.unwrap(), y.unwrap().receipt.unwrap());
    let mut heights = [x.receipt.height, y.receipt.height];
    heights.sort();
    assert_eq!(heights, [0, 1], "each call once, one after the other");
    let verified = VerifiedCommittee::new(committee).unwrap();
    for r in [&x, &y] {
        // The home's own proposal never gathered a quorum: both calls were run by the leader
        // that took over in the view change.
        assert_ne!(r.receipt.executor.to_string(), home, "{r:?}");
        verified.verify(&r.aggregated(), "onvm-devnet").unwrap();
    }

    // The partition heals (A restarts without it) and A takes part again.
    a.halt().await;
    a.set_overrides(&[]);
    a.resume().await;
    let z = ProgramApiClient::execute(&a.client().await, p, put("z"), request("z"))
        .await
        .unwrap()
        .receipt
        .unwrap();
    assert_eq!(z.receipt.height, 2);
    converge(&[&a, &b, &c, &d]).await;
    let mut states = Vec::new();
    for n in [&a, &b, &c, &d] {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        states.push((info.height, info.state_root));
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
    assert_eq!(states[0].0, 3);
    for n in [a, b, c, d] {
        n.stop().await;
    }
}
