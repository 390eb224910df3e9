//! Nodes that can only meet through a relay: a local `iroh-relay` server (the one `onvm relay`
//! runs), nodes with `net.relay_only` (no UDP socket, so no direct path can exist), and every
//! protocol over it: joining by ticket, hellos and DAG sync, gossip, a 10 MiB BAO-verified blob
//! transfer, forwarded calls and committee attestation. Then the relay dies and comes back, and
//! the nodes recover without a restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestNode, converge, pseudo_random_bytes, ticket};
use onvm::node::relay::{Relay, RelayOptions};
use onvm::rpc_api::api::{NodeApiClient, PeerApiClient, ProgramApiClient};
use onvm::rpc_api::committee::VerifiedCommittee;
use onvm::rpc_api::types::PeerInfo;

fn kv(op: serde_json::Value) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&op).unwrap().into()
}

async fn start_relay(addr: SocketAddr) -> Relay {
    Relay::start(RelayOptions::plain(addr))
        .await
        .expect("relay starts")
}

fn relay_only(url: &str) -> Vec<String> {
    vec![
        format!("net.relays=[\"{url}\"]"),
        "net.relay_only=true".into(),
    ]
}

async fn start_relayed(url: &str) -> TestNode {
    let overrides = relay_only(url);
    let refs: Vec<&str> = overrides.iter().map(|s| s.as_str()).collect();
    TestNode::start_with(&refs).await
}

/// Waits until `node` lists every id of `expected` as a peer, and returns its peer list.
async fn peers_of(node: &TestNode, expected: &[&TestNode]) -> Vec<PeerInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let peers = PeerApiClient::list(&node.client().await).await.unwrap();
        let all = expected.iter().all(|e| {
            peers
                .iter()
                .any(|p| p.endpoint_id == e.node().endpoint_id() && p.last_error.is_none())
        });
        if all {
            return peers;
        }
        assert!(Instant::now() < deadline, "peers never met: {peers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writing call on `node`, retried while the network recovers (the relay just came back).
async fn put_eventually(node: &TestNode, program: onvm::rpc_api::ProgramId, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let put = ProgramApiClient::execute(
            &node.client().await,
            program,
            kv(serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="})),
            None,
        )
        .await;
        match put {
            Ok(r) => {
                assert!(r.receipt.is_some_and(|r| r.attestation.is_some()));
                return;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no write after the relay came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_nodes_run_every_protocol_through_the_relay_and_survive_its_restart() {
    let relay = start_relay("127.0.0.1:0".parse().unwrap()).await;
    let url = relay.url().to_string();
    let relay_addr = relay.http_addr().unwrap();
    let a = start_relayed(&url).await;
    let b = start_relayed(&url).await;
    let c = start_relayed(&url).await;

    // Each node reports its relay; its ticket holds no direct address, only the relay.
    for n in [&a, &b, &c] {
        let info = NodeApiClient::info(&n.client().await).await.unwrap();
        assert_eq!(info.relay_url.as_deref(), Some(url.as_str()), "{info:?}");
        assert!(info.relay_connected && info.relay_only, "{info:?}");
        assert_eq!(info.relays, vec![url.clone()]);
        assert!(info.addresses.is_empty(), "{:?}", info.addresses);
        let t: iroh_tickets::endpoint::EndpointTicket = info.ticket.parse().unwrap();
        assert_eq!(t.endpoint_addr().ip_addrs().count(), 0);
        assert_eq!(t.endpoint_addr().relay_urls().count(), 1);
    }

    // Joining by ticket; C meets A through B's hello.
    PeerApiClient::connect(&b.client().await, ticket(&a).await)
        .await
        .unwrap();
    PeerApiClient::connect(&c.client().await, ticket(&b).await)
        .await
        .unwrap();
    for (n, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        for p in peers_of(n, &others).await {
            assert_eq!(p.connection, "relayed", "{p:?}");
            assert!(p.latency_ms.is_some(), "{p:?}");
        }
    }
    converge(&[&a, &b, &c]).await;

    // A K=3 committee program; writes sent to B and C are forwarded to A and attested by all.
    let ca = a.client().await;
    let p = common::deploy_kvstore(&ca, Some(3)).await;
    let committee = ProgramApiClient::committee(&ca, p).await.unwrap();
    assert_eq!(committee.members.len(), 3);
    let verified = VerifiedCommittee::new(committee.clone()).unwrap();
    converge(&[&a, &b, &c]).await;
    for (i, node) in [&b, &c, &a].iter().enumerate() {
        let put = ProgramApiClient::execute(
            &node.client().await,
            p,
            kv(serde_json::json!({"op": "put", "key": format!("k{i}"), "data_base64": "dg=="})),
            None,
        )
        .await
        .unwrap();
        let receipt = put.receipt.unwrap();
        verified
            .verify(&receipt.aggregated(), "onvm-devnet")
            .unwrap();
    }

    // A 10 MiB blob uploaded on A, read on C: fetched through the relay, BAO-verified.
    let data = pseudo_random_bytes(10 * 1024 * 1024, 14);
    let id = common::upload_chunked(&ca, &data, None).await;
    let back = common::read_blob(&c.client().await, id, data.len()).await;
    assert!(back == data, "the blob read on C differs from A's");

    // The DAG converges and every node holds the same state.
    converge(&[&a, &b, &c]).await;
    let home = ProgramApiClient::info(&ca, p).await.unwrap();
    for n in [&b, &c] {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        assert_eq!((info.height, info.state_root), (3, home.state_root));
    }

    // The relay dies: the nodes lose their only path (calls fail, nothing is lost) ...
    relay.shutdown().await;
    let lost = Instant::now() + Duration::from_secs(30);
    while NodeApiClient::info(&a.client().await)
        .await
        .unwrap()
        .relay_connected
    {
        assert!(Instant::now() < lost, "A never noticed the relay died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and comes back on the same address: they reconnect by themselves.
    let relay = start_relay(relay_addr).await;
    let back_at = Instant::now();
    for n in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !NodeApiClient::info(&n.client().await)
            .await
            .unwrap()
            .relay_connected
        {
            assert!(Instant::now() < deadline, "a node never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    put_eventually(&b, p, "after-restart").await;
    converge(&[&a, &b, &c]).await;
    eprintln!(
        "relay restart: nodes reconnected and wrote again {:?} after it came back",
        back_at.elapsed()
    );
    let home = ProgramApiClient::info(&ca, p).await.unwrap();
    assert_eq!(home.height, 4);
    relay.shutdown().await;
}

/// Two nodes that may go direct meet through the relay (the ticket names only the relay) and
/// then move to the direct path iroh finds through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_introduced_by_the_relay_upgrade_to_a_direct_path() {
    let relay = start_relay("127.0.0.1:0".parse().unwrap()).await;
    let with_relay = format!("net.relays=[\"{}\"]", relay.url());
    let a = TestNode::start_with(&[with_relay.as_str()]).await;
    let b = TestNode::start_with(&[with_relay.as_str()]).await;
    let info = NodeApiClient::info(&a.client().await).await.unwrap();
    assert!(info.relay_connected && !info.relay_only, "{info:?}");
    assert!(!info.addresses.is_empty());
    // A's ticket stripped to its id and home relay: B can only start through the relay.
    let full: iroh_tickets::endpoint::EndpointTicket = info.ticket.parse().unwrap();
    let addr = full.endpoint_addr();
    let relay_only_addr =
        iroh::EndpointAddr::new(addr.id).with_relay_url(addr.relay_urls().next().unwrap().clone());
    let ticket = iroh_tickets::endpoint::EndpointTicket::new(relay_only_addr).to_string();
    PeerApiClient::connect(&b.client().await, ticket)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let peers = PeerApiClient::list(&b.client().await).await.unwrap();
        let on_b = peers
            .iter()
            .find(|p| p.endpoint_id == a.node().endpoint_id());
        if on_b.is_some_and(|p| p.connection == "direct") {
            break;
        }
        assert!(Instant::now() < deadline, "never went direct: {peers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relay.shutdown().await;
}

/// A relay over HTTPS with a self-signed certificate: nodes that trust it (`net.relay_ca_file`)
/// meet through it; a node that does not never connects to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_nodes_meet_through_a_tls_relay_whose_certificate_they_trust() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let relay = Relay::start(RelayOptions {
        tls: Some(onvm::node::relay::RelayTls {
            cert: cert.clone(),
            key,
            https_listen: "127.0.0.1:0".parse().unwrap(),
            hostname: "127.0.0.1".into(),
        }),
        ..RelayOptions::plain("127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    let url = relay.url().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut trusting = relay_only(&url);
    trusting.push(format!(
        "net.relay_ca_file={:?}",
        cert.display().to_string()
    ));
    let refs: Vec<&str> = trusting.iter().map(|s| s.as_str()).collect();
    let a = TestNode::start_with(&refs).await;
    let b = TestNode::start_with(&refs).await;
    for n in [&a, &b] {
        let info = NodeApiClient::info(&n.client().await).await.unwrap();
        assert!(info.relay_connected, "{info:?}");
    }
    PeerApiClient::connect(&b.client().await, ticket(&a).await)
        .await
        .unwrap();
    for p in peers_of(&a, &[&b]).await {
        assert_eq!(p.connection, "relayed", "{p:?}");
    }
    // Without the certificate, the relay's TLS handshake fails: no home relay.
    let refs: Vec<String> = relay_only(&url);
    let refs: Vec<&str> = refs.iter().map(|s| s.as_str()).collect();
    let stranger = TestNode::start_with(&refs).await;
    let info = NodeApiClient::info(&stranger.client().await).await.unwrap();
    assert!(!info.relay_connected, "{info:?}");
    // A certificate file that cannot be read stops the node at start, naming it.
    let config = common::test_config(&["net.relay_ca_file=\"/nonexistent/ca.pem\"".to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let err = onvm::node::Node::start(dir.path(), config, onvm::node::Identity::generate())
        .await
        .err()
        .expect("a missing relay_ca_file is refused")
        .to_string();
    assert!(
        err.contains("relay_ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_token_serves_only_nodes_that_present_it() {
    let token_relay = Relay::start(RelayOptions {
        token: Some("s3cret-relay-token".into()),
        ..RelayOptions::plain("127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
    let url = token_relay.url().to_string();
    let mut with_token = relay_only(&url);
    with_token.push("net.relay_token=\"s3cret-relay-token\"".into());
    let refs: Vec<&str> = with_token.iter().map(|s| s.as_str()).collect();
    let member = TestNode::start_with(&refs).await;
    let info = NodeApiClient::info(&member.client().await).await.unwrap();
    assert!(info.relay_connected, "{info:?}");

    let mut wrong = relay_only(&url);
    wrong.push("net.relay_token=\"guess\"".into());
    let refs: Vec<&str> = wrong.iter().map(|s| s.as_str()).collect();
    let outsider = TestNode::start_with(&refs).await;
    let info = NodeApiClient::info(&outsider.client().await).await.unwrap();
    assert!(!info.relay_connected, "{info:?}");
    // The outsider cannot reach the member at all (relay-only, and the relay refuses it).
    let joined = tokio::time::timeout(
        Duration::from_secs(20),
        PeerApiClient::connect(&outsider.client().await, ticket(&member).await),
    )
    .await;
    assert!(!matches!(joined, Ok(Ok(_))), "{joined:?}");
    token_relay.shutdown().await;
}

/// `onvm relay` and two `onvm run-node` processes that can only meet through it, joined by
/// ticket with the CLI.
#[test]
fn onvm_relay_joins_two_relay_only_run_node_processes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let onvm = |args: &[&str]| {
        let out = Command::new(common::onvm_bin())
            .args(args)
            .env_remove("ONVM_RPC")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "onvm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut relay = Command::new(common::onvm_bin())
        .args(["relay", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("relay: ")
        .unwrap_or_else(|| panic!("onvm relay printed {first:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["one", "two"] {
        let dir = tmp.path().join(name);
        common::init_plaintext(&dir);
        nodes.push(common::spawn_node(&dir, &["--relay", &url, "--relay-only"]));
    }
    let (url1, url2) = (nodes[0].1.clone(), nodes[1].1.clone());
    let ticket = onvm(&["--rpc", &url1, "ticket"]);
    onvm(&["--rpc", &url2, "connect", ticket.trim()]);
    let info = onvm(&["--rpc", &url1, "--json", "node-info"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["relay_url"], serde_json::json!(url), "{info}");
    assert_eq!(info["relay_connected"], serde_json::json!(true), "{info}");
    // Node one learns node two from its hello; the path between them is the relay.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let peers: serde_json::Value =
            serde_json::from_str(&onvm(&["--rpc", &url1, "--json", "peers"])).unwrap();
        let relayed = peers
            .as_array()
            .is_some_and(|p| p.len() == 1 && p[0]["connection"] == "relayed");
        if relayed {
            break;
        }
        assert!(Instant::now() < deadline, "{peers}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let human = onvm(&["--rpc", &url1, "node-info"]);
    assert!(human.contains(&url), "{human}");
    for (child, _) in nodes {
        common::kill9(child);
    }
    common::kill9(relay);
}
