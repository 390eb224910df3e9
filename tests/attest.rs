//! Committees on real nodes: calls are re-executed by the members, and commit only with a
//! threshold of BLS signatures aggregated into the receipt; a member whose result differs
//! refuses to sign and records evidence; receipts verify on every node and offline.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, converge};
use jsonrpsee::core::ClientError;
use onvm::rpc_api::api::{ProgramApiClient, ReceiptApiClient};
use onvm::rpc_api::committee::{ReceiptStreamItem, VerifiedCommittee};
use onvm::rpc_api::error as codes;
use onvm::rpc_api::program::DeployRequest;

fn kv(op: serde_json::Value) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&op).unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_attested_by_the_committee_and_a_dissenting_member_leaves_evidence() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    // D's re-executions disagree (a test hook standing in for a different program build).
    let d = TestNode::start_with(&["committee.debug_corrupt_results=true"]).await;
    common::join(&a, &[&b, &c, &d]).await;
    let ca = a.client().await;
    let wasm = common::program_wasm("kvstore");
    // Four members, three signatures needed: D's refusal does not stop the call.
    let p = common::deploy_kvstore(&ca, Some(4)).await;
    let committee = ProgramApiClient::committee(&ca, p).await.unwrap();
    assert_eq!((committee.members.len(), committee.threshold), (4, 3));
    assert_eq!(
        committee.members[0].endpoint_id.to_string(),
        a.node().endpoint_id()
    );
    let d_index = committee
        .members
        .iter()
        .position(|m| m.endpoint_id.to_string() == d.node().endpoint_id())
        .unwrap();
    converge(&[&a, &b, &c, &d]).await;

    let mut receipts = Vec::new();
    for (i, node) in [&b, &c, &a].iter().enumerate() {
        let put = ProgramApiClient::execute(
            &node.client().await,
            p,
            kv(serde_json::json!({"op": "put", "key": format!("k{i}"), "data_base64": "dg=="})),
            None,
        )
        .await
        .unwrap();
        receipts.push(put.receipt.unwrap());
    }
    converge(&[&a, &b, &c, &d]).await;
    let verified = VerifiedCommittee::new(committee.clone()).unwrap();
    let home = ProgramApiClient::info(&ca, p).await.unwrap();
    for r in &receipts {
        let attestation = r.attestation.as_ref().expect("an attested receipt");
        let signers = verified.signers(&attestation.signers.0).unwrap();
        // D's hook corrupts only its re-executions, so it never signs another member's
        // proposal. (After a view change on a slow machine D may lead; it signs its own run.)
        let d_led = r.receipt.executor.to_string() == d.node().endpoint_id();
        assert!(
            d_led || !signers.contains(&d_index),
            "D signed a proposal it disagrees with"
        );
        assert!(signers.len() >= 3, "{signers:?}");
        // Offline, with the pure verifier and the committee alone.
        verified.verify(&r.aggregated(), "onvm-devnet").unwrap();
        // And on every node.
        for node in [&a, &b, &c, &d] {
            let v = ReceiptApiClient::verify(&node.client().await, r.clone())
                .await
                .unwrap();
            assert!(v.valid, "{v:?}");
            assert_eq!(v.signers.len(), signers.len());
        }
    }
    // Every node applied the three calls and holds the same root.
    for node in [&b, &c, &d] {
        let info = ProgramApiClient::info(&node.client().await, p)
            .await
            .unwrap();
        assert_eq!((info.height, info.state_root), (3, home.state_root));
    }
    // D recorded its disagreements: the proposal and what it computed. (A proposal D reaches
    // only after the call was finalized without it cannot be re-executed, so not every call
    // necessarily leaves evidence; at least one does.)
    let started = Instant::now();
    let evidence = loop {
        let e = ReceiptApiClient::evidence(&d.client().await, p)
            .await
            .unwrap();
        if !e.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!evidence.is_empty(), "D recorded no evidence");
    for e in &evidence {
        let onvm::rpc_api::committee::Evidence::Disagreement {
            proposed, computed, ..
        } = e
        else {
            panic!("an honest committee equivocated: {e:?}");
        };
        let e = Disagreement { proposed, computed };
        let proposed = e.proposed.id();
        // A proposal D disagreed with is for one of these calls; it need not be the one that
        // finalized (a view change on a slow machine replaces an unprepared proposal).
        assert!(
            receipts
                .iter()
                .any(|r| r.receipt.call_id == e.proposed.call_id),
            "evidence about a call nobody made"
        );
        if !receipts.iter().any(|r| r.id == proposed) {
            println!(
                "evidence about a superseded proposal of {}",
                e.proposed.call_id
            );
        }
        assert_ne!(e.computed.id(), proposed);
        assert_eq!(e.computed.state_root_out, e.proposed.state_root_out);
    }
    assert!(ReceiptApiClient::evidence(&ca, p).await.unwrap().is_empty());

    // receipt_subscribe on a replica replays the program's finalized receipts in order.
    let cb = b.client().await;
    let mut sub = ReceiptApiClient::subscribe_receipts(&cb, Some(p), Some(1))
        .await
        .unwrap();
    for expected in &receipts {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Some(Ok(ReceiptStreamItem::Receipt { receipt, .. }))) => {
                assert_eq!(receipt.id, expected.id);
                assert!(receipt.attestation.is_some());
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }

    // Tampering is caught: a changed result, a signer removed from the bitmap.
    let mut tampered = receipts[0].clone();
    tampered.receipt.output_len += 1;
    let v = ReceiptApiClient::verify(&ca, tampered).await.unwrap();
    assert!(!v.valid);
    let mut fewer = receipts[0].clone();
    if let Some(att) = fewer.attestation.as_mut() {
        att.signers.0[0] &= !(1 << 1);
        att.signers.0[0] &= !(1 << 2);
        att.signers.0[0] &= !(1 << 3);
        att.signers.0[0] |= 1 << 1;
    }
    assert!(!ReceiptApiClient::verify(&ca, fewer).await.unwrap().valid);

    // A threshold that is not the BFT quorum is refused at deploy, with the reason: with every
    // member required, one dead or dissenting member (here D) would halt the program.
    let err = match ProgramApiClient::deploy(
        &ca,
        DeployRequest {
            wasm_base64: Some(wasm.into()),
            salt: "strict".into(),
            committee_size: Some(4),
            threshold: Some(4),
            ..Default::default()
        },
    )
    .await
    {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a refused deploy, got {other:?}"),
    };
    assert_eq!(err.code(), codes::INVALID_PARAMS, "{err:?}");
    assert!(err.message().contains("BFT quorum"), "{}", err.message());
    assert!(err.message().contains("pass 3"), "{}", err.message());
    for n in [a, b, c, d] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_sequencer_is_down_the_next_member_takes_over() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let d = TestNode::start().await;
    common::join(&a, &[&b, &c, &d]).await;
    // Four members, three signatures: the committee survives one member down.
    let p = common::deploy_kvstore(&a.client().await, Some(4)).await;
    converge(&[&a, &b, &c, &d]).await;
    let put = |key: &str| kv(serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}));
    ProgramApiClient::execute(&b.client().await, p, put("before"), None)
        .await
        .unwrap();
    converge(&[&a, &b, &c, &d]).await;
    let home = a.node().endpoint_id();
    a.stop().await;

    // The home is gone: a call sent to C is sequenced by the next member and attested by the
    // three that are left.
    let started = Instant::now();
    let after = ProgramApiClient::execute(&c.client().await, p, put("after"), None)
        .await
        .unwrap();
    println!(
        "a call with the sequencer down committed in {:?}",
        started.elapsed()
    );
    let receipt = after.receipt.unwrap();
    assert_eq!(receipt.receipt.height, 1);
    assert_ne!(receipt.receipt.executor.to_string(), home);
    let committee = ProgramApiClient::committee(&b.client().await, p)
        .await
        .unwrap();
    let verified = VerifiedCommittee::new(committee).unwrap();
    verified
        .verify(&receipt.aggregated(), "onvm-devnet")
        .unwrap();
    converge(&[&b, &c, &d]).await;
    let mut roots = Vec::new();
    for n in [&b, &c, &d] {
        let client = n.client().await;
        let info = ProgramApiClient::info(&client, p).await.unwrap();
        roots.push((info.height, info.state_root));
        let v = ReceiptApiClient::verify(&client, receipt.clone())
            .await
            .unwrap();
        assert!(v.valid, "{v:?}");
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    assert_eq!(roots[0].0, 2, "each call applied once");
    for n in [b, c, d] {
        n.stop().await;
    }
}

/// The receipts of a disagreement.
struct Disagreement<'a> {
    proposed: &'a onvm::rpc_api::program::ExecutionReceipt,
    computed: &'a onvm::rpc_api::program::ExecutionReceipt,
}
