//! One faulty member of four, on real `onvm` processes (docs/PROTOCOL.md, "Committees and
//! aggregated receipts"): a member running the test-only lying modes (`committee.debug_*`:
//! it signs two values per vote, sends a forged decision with every consensus message, and
//! censors other members' calls when it leads) and a member paused with SIGSTOP. Honest
//! members never attest two receipts at one height, never halt, commit every call once, and a
//! paused member stalls the program for about one view timeout, not for as long as it is
//! paused.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{converge_urls, kv_put};
use onvm::rpc_api::api::{NodeApiClient, ProgramApiClient, ReceiptApiClient};
use onvm::rpc_api::committee::{Evidence, VerifiedCommittee};
use onvm::rpc_api::program::SignedReceipt;
use onvm::rpc_api::{Hash32, ProgramId};

const LIES: [&str; 3] = [
    "committee.debug_equivocate=true",
    "committee.debug_forge_decisions=true",
    "committee.debug_censor=true",
];

/// Every node in `urls` holds the same receipts at heights `0..n` (one per height), each
/// attested by the committee, with no call id twice; returns them.
async fn one_receipt_per_height(urls: &[String], p: ProgramId, n: usize) -> Vec<SignedReceipt> {
    converge_urls(urls).await;
    let committee = ProgramApiClient::committee(&common::ws_client(&urls[0]).await, p)
        .await
        .unwrap();
    let verified = VerifiedCommittee::new(committee).unwrap();
    let first = common::all_receipts(&urls[0], p).await;
    assert_eq!(first.len(), n, "every call committed, none twice");
    let heights: Vec<u64> = first.iter().map(|r| r.receipt.height).collect();
    assert_eq!(heights, (0..n as u64).collect::<Vec<_>>());
    let calls: HashSet<Hash32> = first.iter().map(|r| r.receipt.call_id).collect();
    assert_eq!(calls.len(), n, "a call id committed twice");
    for r in &first {
        verified
            .verify(&r.aggregated(), "onvm-devnet")
            .unwrap_or_else(|e| panic!("height {}: {e}", r.receipt.height));
    }
    for url in &urls[1..] {
        let theirs = common::all_receipts(url, p).await;
        let ids: Vec<_> = theirs.iter().map(|r| r.id).collect();
        let ours: Vec<_> = first.iter().map(|r| r.id).collect();
        assert_eq!(ids, ours, "{url} holds other receipts");
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_member_never_gets_two_receipts_attested_and_never_halts_the_program() {
    let (_tmp, children, urls, _) =
        common::spawn_network(&[vec![], vec![], vec![], LIES.to_vec()]).await;
    let p = common::deploy_kvstore(&common::ws_client(&urls[0]).await, Some(4)).await;
    converge_urls(&urls).await;
    let committee = ProgramApiClient::committee(&common::ws_client(&urls[0]).await, p)
        .await
        .unwrap();
    assert_eq!(committee.members.len(), 4, "the liar is a member");

    // Three honest writers at once, while the liar equivocates, forges and censors.
    let started = Instant::now();
    let calls = 8;
    let mut writers = tokio::task::JoinSet::new();
    for (w, url) in urls[..3].iter().enumerate() {
        let url = url.clone();
        writers.spawn(async move {
            let client = common::ws_client(&url).await;
            let mut answered = Vec::new();
            for i in 0..calls {
                let key = format!("w{w}-{i}");
                let r = ProgramApiClient::execute(&client, p, kv_put(&key), None)
                    .await
                    .unwrap_or_else(|e| panic!("{key} with a lying member: {e}"));
                answered.push(r.receipt.expect("a write has a receipt").id);
            }
            answered
        });
    }
    let answered: Vec<_> = writers.join_all().await.into_iter().flatten().collect();
    println!(
        "{} calls with a lying member answered in {:?}",
        answered.len(),
        started.elapsed()
    );
    let honest = urls[..3].to_vec();
    let committed = one_receipt_per_height(&honest, p, 3 * calls).await;
    let ids: HashSet<_> = committed.iter().map(|r| r.id).collect();
    assert!(answered.iter().all(|id| ids.contains(id)));
    // The liar's forged decisions reached the honest members and were refused.
    let mut refused = 0;
    for url in &honest {
        let metrics = NodeApiClient::metrics(&common::ws_client(url).await)
            .await
            .unwrap();
        refused += metrics.counters["decisions_refused"];
    }
    println!("forged decisions refused by the honest members: {refused}");
    assert!(refused > 0);
    // Its equivocations were caught: each honest member that saw both of a pair of its votes
    // keeps them, and anyone holding the committee can check them.
    let committee = ProgramApiClient::committee(&common::ws_client(&urls[0]).await, p)
        .await
        .unwrap();
    let liar: Hash32 = NodeApiClient::info(&common::ws_client(&urls[3]).await)
        .await
        .unwrap()
        .endpoint_id
        .parse()
        .unwrap();
    let verified = VerifiedCommittee::new(committee).unwrap();
    let mut caught = 0;
    for url in &honest {
        let evidence = ReceiptApiClient::evidence(&common::ws_client(url).await, p)
            .await
            .unwrap();
        for e in evidence {
            let Evidence::Equivocation(q) = e else {
                panic!("{url}: unexpected evidence {e:?}");
            };
            assert_eq!(q.member, liar, "an honest member accused");
            assert!(q.verify(&verified, "onvm-devnet"), "{q:?}");
            let mut forged = q.clone();
            if let Some(last) = forged.second.message.0.last_mut() {
                *last ^= 1;
            }
            assert!(!forged.verify(&verified, "onvm-devnet"));
            caught += 1;
        }
    }
    println!("equivocations of the lying member kept by the honest members: {caught}");
    assert!(caught > 0);
    let (ok, text) = common::audit(&honest[1], p);
    assert!(ok, "audit: {text}");
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_stalls_its_program_for_about_one_view_timeout() {
    let (_tmp, children, urls, _) = common::spawn_network(&vec![Vec::new(); 4]).await;
    // The default committee: four members, quorum three.
    let p = common::deploy_kvstore(&common::ws_client(&urls[0]).await, None).await;
    converge_urls(&urls).await;

    // Two writers on two members record when each of their calls is answered.
    let answers: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for (w, url) in urls[1..3].iter().enumerate() {
        let (url, answers, stop) = (url.clone(), answers.clone(), stop.clone());
        writers.spawn(async move {
            let client = common::ws_client(&url).await;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = format!("w{w}-{n}");
                ProgramApiClient::execute(&client, p, kv_put(&key), None)
                    .await
                    .unwrap_or_else(|e| panic!("{key} while a member is paused: {e}"));
                answers.lock().unwrap().push(Instant::now());
                n += 1;
            }
            n
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = children[3].id().to_string();
    let pause = Duration::from_secs(12);
    assert!(
        Command::new("kill")
            .args(["-STOP", &paused])
            .status()
            .unwrap()
            .success()
    );
    let paused_at = Instant::now();
    tokio::time::sleep(pause).await;
    assert!(
        Command::new("kill")
            .args(["-CONT", &paused])
            .status()
            .unwrap()
            .success()
    );
    let resumed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let total: usize = writers.join_all().await.into_iter().sum();

    let mut times = answers.lock().unwrap().clone();
    times.sort();
    let during: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|t| *t >= paused_at && *t <= resumed_at)
        .collect();
    // The longest the program went without a commit while the member was paused (counting
    // from the pause to the first commit, and from the last one to the resume).
    let mut marks = vec![paused_at];
    marks.extend(during.iter().copied());
    marks.push(resumed_at);
    let stall = marks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "member paused {pause:?}: {} of {total} calls committed meanwhile, longest stall {stall:?}",
        during.len()
    );
    assert!(
        !during.is_empty(),
        "the program went on while a member was paused"
    );
    assert!(
        stall < pause,
        "the program stalled as long as the member was paused"
    );
    one_receipt_per_height(&urls, p, total).await;
    drop(children);
}
