//! Two live leaders whose votes split, resolved by a round change (issue 11). A partition
//! cuts the program's home (member 0, leader of round 0 at height 0) off from two of its three
//! members while calls arrive on both sides: the home proposes its call but gathers only two of
//! the three prevotes it needs; the cut-off members time out, move to round 1, and its leader
//! gets a call decided. The home's call then follows at the next height. Both commit once,
//! neither under the home's lost proposal, and after the partition heals the home takes part
//! again and every node holds the same state.

mod common;

use std::time::Instant;

use common::{TestNode, converge, kv_put, with_request_id};
use onvm::rpc_api::api::ProgramApiClient;
use onvm::rpc_api::committee::VerifiedCommittee;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_leaders_split_by_a_partition_resolve_by_a_round_change() {
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
    common::join(&a, &[&b, &c, &d]).await;
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
        ProgramApiClient::execute(&ca, p, kv_put("x"), with_request_id("x")),
        ProgramApiClient::execute(&cc, p, kv_put("y"), with_request_id("y")),
    );
    println!("both calls answered after {:?}", started.elapsed());
    let (x, y) = (x.unwrap().receipt.unwrap(), y.unwrap().receipt.unwrap());
    let mut heights = [x.receipt.height, y.receipt.height];
    heights.sort();
    assert_eq!(heights, [0, 1], "each call once, one after the other");
    let verified = VerifiedCommittee::new(committee).unwrap();
    for r in [&x, &y] {
        // The home's own proposal never gathered a quorum: both calls were run by the members
        // that led later rounds and heights.
        assert_ne!(r.receipt.executor.to_string(), home, "{r:?}");
        verified.verify(&r.aggregated(), "onvm-devnet").unwrap();
    }

    // The partition heals (A restarts without it) and A takes part again.
    a.halt().await;
    a.set_overrides(&[]);
    a.resume().await;
    let z = ProgramApiClient::execute(&a.client().await, p, kv_put("z"), with_request_id("z"))
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

/// A hostile stranger on `/onvm/committee/2`: garbage, an oversized stream, unknown fields,
/// malformed consensus bytes, forged decisions for a real program, and a flood of envelopes
/// naming made-up programs. None of it is
/// a member's message, so nothing changes: the committee keeps deciding calls and every node
/// agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_forgeries_on_the_committee_protocol_change_nothing() {
    use iroh::endpoint::presets;
    use onvm::node::consensus::tendermint::sequencer::{Decided, Message};
    use onvm::node::consensus::tendermint::{AggregateCertificate, Height, MemberIndex, Value};
    use onvm::node::net::{Attachment, COMMITTEE_ALPN, CommitteeEnvelope};
    use onvm::rpc_api::HexBytes;

    let a = TestNode::start().await;
    let (b, c, d) = (
        TestNode::start().await,
        TestNode::start().await,
        TestNode::start().await,
    );
    common::join(&a, &[&b, &c, &d]).await;
    let p = common::deploy_kvstore(&a.client().await, Some(4)).await;
    converge(&[&a, &b, &c, &d]).await;
    ProgramApiClient::execute(&a.client().await, p, kv_put("before"), None)
        .await
        .unwrap();

    let addr: iroh_tickets::endpoint::EndpointTicket = common::ticket(&a).await.parse().unwrap();
    let stranger = iroh::Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    let conn = stranger
        .connect(addr.endpoint_addr().clone(), COMMITTEE_ALPN)
        .await
        .unwrap();
    let send = |bytes: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let mut s = conn.open_uni().await.unwrap();
            let _ = s.write_all(&bytes).await;
            let _ = s.finish();
        }
    };
    let envelope = |program, message: Message| {
        serde_json::to_vec(&CommitteeEnvelope {
            network_id: "onvm-devnet".into(),
            program_id: program,
            message: Some(HexBytes(message.encode())),
            attachment: Attachment::None,
        })
        .unwrap()
    };
    let junk = Value {
        call_id: [7; 32],
        receipt_id: [8; 32],
        proposer: MemberIndex(0),
    };
    send(b"\xff not json".to_vec()).await;
    // Over net.max_forward_bytes (16 MiB): dropped unread.
    send(vec![b'{'; 17 * 1024 * 1024]).await;
    let mut unknown: serde_json::Value = serde_json::from_slice(&envelope(
        p,
        Message::DecisionRequest {
            from_height: Height(0),
        },
    ))
    .unwrap();
    unknown["extra"] = serde_json::json!(1);
    send(serde_json::to_vec(&unknown).unwrap()).await;
    let mut malformed: serde_json::Value = serde_json::from_slice(&envelope(
        p,
        Message::DecisionRequest {
            from_height: Height(0),
        },
    ))
    .unwrap();
    malformed["message"] = serde_json::json!("01ff00");
    send(serde_json::to_vec(&malformed).unwrap()).await;
    // A forged decision for the real program's next height, from a node that is not a member
    // (and with a certificate nobody signed).
    send(envelope(
        p,
        Message::Decision(Decided {
            height: Height(1),
            value: junk,
            certificate: AggregateCertificate {
                height: 1,
                round: 0,
                value_id: junk.id(),
                signers: vec![0b1111],
                signature: vec![0xab; 48],
            },
        }),
    ))
    .await;
    // Made-up programs: each costs the node a lookup, never a DAG pull from the stranger.
    for i in 0..200u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        send(envelope(
            onvm::rpc_api::ProgramId::from_bytes(id),
            Message::Forward {
                call_ids: vec![[1; 32]],
            },
        ))
        .await;
    }

    // The committee goes on deciding, and every node agrees.
    let after = ProgramApiClient::execute(&a.client().await, p, kv_put("after"), None)
        .await
        .unwrap()
        .receipt
        .unwrap();
    assert_eq!(after.receipt.height, 1);
    assert_ne!(after.receipt.call_id.0, junk.call_id);
    converge(&[&a, &b, &c, &d]).await;
    let mut states = Vec::new();
    for n in [&a, &b, &c, &d] {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        states.push((info.height, info.state_root));
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
    assert_eq!(states[0].0, 2);
    stranger.close().await;
    for n in [a, b, c, d] {
        n.stop().await;
    }
}

/// A lying member (`committee.debug_forge_decisions`) sends a made-up decision for every height
/// it speaks about, for a call nobody proposed and "signed" by everyone. The honest members
/// ask each decision for its certificate and drop these: the program keeps deciding calls,
/// every node agrees, and no receipt names the made-up call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_forging_decisions_never_halts_the_program() {
    use onvm::rpc_api::api::NodeApiClient;
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let liar = TestNode::start_with(&["committee.debug_forge_decisions=true"]).await;
    common::join(&a, &[&b, &c, &liar]).await;
    let p = common::deploy_kvstore(&a.client().await, Some(4)).await;
    converge(&[&a, &b, &c, &liar]).await;
    let mut receipts = Vec::new();
    for (i, node) in [&a, &b, &a, &b].iter().enumerate() {
        let r = ProgramApiClient::execute(&node.client().await, p, kv_put(&format!("k{i}")), None)
            .await
            .unwrap_or_else(|e| panic!("call {i} with a lying member: {e}"));
        receipts.push(r.receipt.unwrap());
    }
    converge(&[&a, &b, &c, &liar]).await;
    let committee = ProgramApiClient::committee(&a.client().await, p)
        .await
        .unwrap();
    let verified = VerifiedCommittee::new(committee).unwrap();
    for (height, r) in receipts.iter().enumerate() {
        assert_eq!(r.receipt.height, height as u64);
        assert_ne!(
            r.receipt.call_id.0, [0xfd; 32],
            "a made-up call was applied"
        );
        verified.verify(&r.aggregated(), "onvm-devnet").unwrap();
    }
    let mut states = Vec::new();
    let mut refused = 0;
    for n in [&a, &b, &c] {
        let client = n.client().await;
        let info = ProgramApiClient::info(&client, p).await.unwrap();
        states.push((info.height, info.state_root));
        let metrics = NodeApiClient::metrics(&client).await.unwrap();
        refused += metrics.counters["decisions_refused"];
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
    assert_eq!(states[0].0, 4);
    assert!(
        refused > 0,
        "the liar's decisions reached the honest members and were refused"
    );
    for n in [a, b, c, liar] {
        n.stop().await;
    }
}
