//! Following the node's live feeds (`watch-jobs`, `watch-receipts`, `watch-dag`): one line per
//! item (one JSON object per line with --json), resuming by itself when the node closes a
//! subscription for lag, stopping after `--limit` items, and ending quietly when the reader of
//! a pipe goes away.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;

use anyhow::{Result, bail};
use jsonrpsee::core::client::{Subscription, SubscriptionCloseReason};
use onvm_rpc_api::api::{DagApiClient, ProgramApiClient, ReceiptApiClient};
use onvm_rpc_api::committee::ReceiptStreamItem;
use onvm_rpc_api::dag::{DagNode, DagPayload, DagStreamItem};
use onvm_rpc_api::jobs::JobStreamItem;
use onvm_rpc_api::program::SignedReceipt;
use onvm_rpc_api::{Hash32, ProgramId};

use crate::client::{Session, rpc_err};

/// What one notification of a feed means to a follower.
pub(crate) enum Step<T> {
    /// An item at this sequence number.
    Item(u64, T),
    /// The node ended the subscription; `lagged` means: subscribe again from `resume_from_seq`.
    Closed {
        reason: String,
        resume_from_seq: u64,
    },
}

/// A subscription's item type, as a follower sees it.
pub(crate) trait Feed: serde::de::DeserializeOwned + Send + 'static {
    type Item;
    fn step(self) -> Step<Self::Item>;
}

impl Feed for JobStreamItem {
    type Item = onvm_rpc_api::jobs::JobEvent;
    fn step(self) -> Step<Self::Item> {
        match self {
            JobStreamItem::Event(e) => Step::Item(e.seq, e),
            JobStreamItem::Closed {
                reason,
                resume_from_seq,
            } => Step::Closed {
                reason,
                resume_from_seq,
            },
        }
    }
}

impl Feed for ReceiptStreamItem {
    type Item = Box<SignedReceipt>;
    fn step(self) -> Step<Self::Item> {
        match self {
            ReceiptStreamItem::Receipt { seq, receipt } => Step::Item(seq, receipt),
            ReceiptStreamItem::Closed {
                reason,
                resume_from_seq,
            } => Step::Closed {
                reason,
                resume_from_seq,
            },
        }
    }
}

impl Feed for DagStreamItem {
    type Item = (Hash32, Box<DagNode>);
    fn step(self) -> Step<Self::Item> {
        match self {
            DagStreamItem::Node { seq, id, node } => Step::Item(seq, (id, node)),
            DagStreamItem::Closed {
                reason,
                resume_from_seq,
            } => Step::Closed {
                reason,
                resume_from_seq,
            },
        }
    }
}

/// Follows a feed from `from_seq` (None: new items only), handing each item to `show`, until
/// `limit` items were shown or the node ends the feed. A close for lag is not an end: the
/// docs/RPC.md contract is to subscribe again from the cursor the close carries, so nothing is
/// missed or shown twice; the same when this client's own notification buffer overflows.
async fn follow<S, Sub, Fut>(
    from_seq: Option<u64>,
    limit: Option<u64>,
    mut subscribe: Sub,
    mut show: impl AsyncFnMut(u64, S::Item) -> Result<()>,
) -> Result<()>
where
    S: Feed,
    Sub: FnMut(Option<u64>) -> Fut,
    Fut: Future<Output = Result<Subscription<S>, jsonrpsee::core::ClientError>>,
{
    if limit == Some(0) {
        return Ok(());
    }
    let mut from = from_seq;
    let mut shown = 0u64;
    let again = |from: Option<u64>| match from {
        Some(seq) => format!("continue with --from-seq {seq}"),
        None => "run the command again".to_string(),
    };
    loop {
        let mut sub = subscribe(from).await.map_err(rpc_err)?;
        loop {
            match sub.next().await {
                Some(Ok(item)) => match item.step() {
                    Step::Item(seq, item) => {
                        from = Some(seq + 1);
                        show(seq, item).await?;
                        shown += 1;
                        if limit.is_some_and(|l| shown >= l) {
                            return Ok(());
                        }
                    }
                    Step::Closed {
                        reason,
                        resume_from_seq,
                    } if reason == "lagged" => {
                        eprintln!(
                            "(the node closed the feed: this client read too slowly; resuming from #{resume_from_seq})"
                        );
                        from = Some(resume_from_seq);
                        break;
                    }
                    Step::Closed { reason, .. } => {
                        eprintln!("(the node ended the feed: {reason})");
                        return Ok(());
                    }
                },
                Some(Err(e)) => bail!(
                    "the node sent an item this onvm cannot read ({e}): is it a different version? {}",
                    again(from)
                ),
                // This client's own buffer of unread notifications overflowed (stdout was
                // read more slowly than the node sent): jsonrpsee dropped the subscription.
                // Everything up to `from` was shown, so continue from there.
                None if matches!(sub.close_reason(), Some(SubscriptionCloseReason::Lagged))
                    && from.is_some() =>
                {
                    eprintln!(
                        "(this client fell behind the feed; resuming from #{})",
                        from.unwrap_or(1)
                    );
                    break;
                }
                None => bail!(
                    "the connection to the node closed (is it shutting down?): {}",
                    again(from)
                ),
            }
        }
    }
}

/// [`follow`] for a command whose items go to stdout: also ends when the reader leaves.
pub(crate) async fn follow_to_stdout<S, Sub, Fut>(
    from_seq: Option<u64>,
    limit: Option<u64>,
    subscribe: Sub,
    show: impl AsyncFnMut(u64, S::Item) -> Result<()>,
) -> Result<()>
where
    S: Feed,
    Sub: FnMut(Option<u64>) -> Fut,
    Fut: Future<Output = Result<Subscription<S>, jsonrpsee::core::ClientError>>,
{
    end_when_the_reader_leaves();
    follow(from_seq, limit, subscribe, show).await
}

/// A follower waits between items without writing. If the reader of its pipe leaves meanwhile
/// (`onvm watch-dag --from-seq 1 | head -1` once the history is shown), no write fails to end
/// it, and the whole pipeline would wait for the next item. So a thread watches stdout and, when
/// its reader is gone, ends the process as the next write would: by SIGPIPE, quietly, like any
/// Unix filter (`die_quietly_on_closed_pipes` in main.rs restored its default action).
fn end_when_the_reader_leaves() {
    use std::os::fd::AsRawFd as _;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: fstat fills a plain struct for an fd this process owns; no pointers are kept.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return;
    }
    // Only pipes and sockets tell that their reader left; a file or a terminal never does.
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
        return;
    }
    std::thread::spawn(move || {
        loop {
            let mut p = libc::pollfd {
                fd,
                events: 0,
                revents: 0,
            };
            // SAFETY: one pollfd on the stack, valid for the call. With no events asked for,
            // poll returns only for POLLERR (a pipe without readers), POLLHUP or POLLNVAL.
            let n = unsafe { libc::poll(&mut p, 1, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if p.revents & libc::POLLNVAL != 0 {
                return;
            }
            if p.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                // SAFETY: raising a signal whose action is the default (terminate).
                unsafe {
                    libc::raise(libc::SIGPIPE);
                }
                return;
            }
        }
    });
}

/// Indexes of the committee members set in an attestation's signer bitmap (bit i,
/// little-endian within each byte, is member i).
fn signer_indexes(bitmap: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for (byte_index, byte) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                out.push(byte_index * 8 + bit);
            }
        }
    }
    out
}

/// Who signed a receipt: the members' endpoint ids when the committee is known, else their
/// indexes (`#2`). None for a receipt without attestation (a committee of one).
fn signers_of(receipt: &SignedReceipt, members: Option<&[Hash32]>) -> Option<Vec<String>> {
    let a = receipt.attestation.as_ref()?;
    Some(
        signer_indexes(&a.signers.0)
            .into_iter()
            .map(|i| match members.and_then(|m| m.get(i)) {
                Some(id) => id.to_string(),
                None => format!("#{i}"),
            })
            .collect(),
    )
}

fn short(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}

/// One line for a receipt: sequence, id, height, outcome, caller, signers if attested.
fn receipt_line(
    seq: u64,
    r: &SignedReceipt,
    signers: Option<&[String]>,
    with_program: bool,
) -> String {
    let rc = &r.receipt;
    let mut line = format!(
        "#{seq:<6} {}  height {:<5} {:<12}",
        r.id,
        rc.height,
        rc.outcome.kind()
    );
    if with_program {
        line.push_str(&format!("  program {}", rc.program_id));
    }
    if rc.caller == Hash32::ZERO {
        line.push_str("  caller anonymous");
    } else {
        line.push_str(&format!("  caller {}", rc.caller));
    }
    if let Some(signers) = signers {
        let names: Vec<&str> = signers.iter().map(|s| short(s)).collect();
        line.push_str(&format!("  signers {}: {}", signers.len(), names.join(" ")));
    }
    line
}

/// One `watch-receipts --json` line: the stream item, with the signers' endpoint ids.
#[derive(serde::Serialize)]
struct ReceiptJson<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    signers: Option<&'a [String]>,
    receipt: &'a SignedReceipt,
}

/// One `watch-dag --json` line: the stream item as the node sent it, without its type tag.
#[derive(serde::Serialize)]
struct DagJson<'a> {
    seq: u64,
    id: Hash32,
    node: &'a DagNode,
}

/// The kind of operation a DAG node carries, as its JSON names it, and what it is about.
fn payload_summary(payload: &DagPayload) -> (&'static str, String) {
    match payload {
        DagPayload::NodeAnnounce { .. } => ("NodeAnnounce", String::new()),
        DagPayload::BlobPublished { blob, size, .. } => {
            ("BlobPublished", format!("{blob} ({size} bytes)"))
        }
        DagPayload::ProgramDeployed { manifest } => {
            ("ProgramDeployed", manifest.manifest.program_id.to_string())
        }
        DagPayload::ExecutionCommitted { receipt, .. } => (
            "ExecutionCommitted",
            format!(
                "{} height {} {}",
                receipt.receipt.program_id,
                receipt.receipt.height,
                receipt.receipt.outcome.kind()
            ),
        ),
        DagPayload::JobSubmitted { job } => ("JobSubmitted", job.job_id.to_string()),
        DagPayload::JobStateChanged { job_id, status, .. } => {
            ("JobStateChanged", format!("{job_id} {}", status.as_str()))
        }
    }
}

impl Session {
    /// Follows the receipts this node applies, of one program or all.
    pub async fn watch_receipts(
        &self,
        program: Option<ProgramId>,
        from_seq: Option<u64>,
        limit: Option<u64>,
    ) -> Result<()> {
        if let Some(p) = program {
            // The feed of an unknown program is silent forever: say so instead.
            ProgramApiClient::info(&self.client, p)
                .await
                .map_err(crate::client::rpc_err_hint(
                    "check the id with `onvm program-catalog`; a program deployed on another node appears here once the DAG has synced",
                ))?;
        }
        // Committees are fixed at deploy: one lookup per program names the signers.
        let mut committees: HashMap<ProgramId, Option<Vec<Hash32>>> = HashMap::new();
        let json = self.json;
        follow_to_stdout(
            from_seq,
            limit,
            |from| ReceiptApiClient::subscribe_receipts(&self.client, program, from),
            async |seq, receipt: Box<SignedReceipt>| {
                let signers = match receipt.attestation {
                    None => None,
                    Some(_) => {
                        let members = match committees.entry(receipt.receipt.program_id) {
                            Entry::Occupied(known) => known.into_mut(),
                            Entry::Vacant(new) => {
                                let members = ProgramApiClient::committee(&self.client, *new.key())
                                    .await
                                    .ok()
                                    .map(|c| c.members.iter().map(|m| m.endpoint_id).collect());
                                new.insert(members)
                            }
                        };
                        signers_of(&receipt, members.as_deref())
                    }
                };
                if json {
                    let line = ReceiptJson {
                        seq,
                        signers: signers.as_deref(),
                        receipt: &receipt,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    println!(
                        "{}",
                        receipt_line(seq, &receipt, signers.as_deref(), program.is_none())
                    );
                }
                Ok(())
            },
        )
        .await
    }

    /// Follows the DAG nodes this node stores, in its arrival order.
    pub async fn watch_dag(&self, from_seq: Option<u64>, limit: Option<u64>) -> Result<()> {
        let json = self.json;
        follow_to_stdout(
            from_seq,
            limit,
            |from| DagApiClient::subscribe_nodes(&self.client, from),
            async |seq, (id, node): (Hash32, Box<DagNode>)| {
                if json {
                    let line = DagJson {
                        seq,
                        id,
                        node: &node,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    let (kind, about) = payload_summary(&node.body.payload);
                    let line = format!(
                        "#{seq:<6} {id}  author {}  {kind:<18} {about}",
                        short(&node.body.author.to_string())
                    );
                    println!("{}", line.trim_end());
                }
                Ok(())
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use jsonrpsee::PendingSubscriptionSink;
    use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
    use onvm_rpc_api::api::{DagApiClient, DagApiServer};
    use onvm_rpc_api::dag::{DagBody, DagHeads};
    use onvm_rpc_api::{BlobId, HexBytes};

    use super::*;

    #[test]
    fn signer_bitmaps_name_members_little_endian_within_bytes() {
        assert_eq!(signer_indexes(&[0b0000_1011]), [0, 1, 3]);
        assert_eq!(signer_indexes(&[0, 0b1000_0001]), [8, 15]);
        assert!(signer_indexes(&[0]).is_empty());
    }

    /// A `dag_subscribe` that numbers nodes 1..=`last`. With `lag_after`, the first
    /// subscription ends with the node's typed close for lag after that many nodes; without
    /// it, nodes are sent as fast as the connection takes them.
    #[derive(Clone)]
    struct FakeDag {
        last: u64,
        lag_after: Option<u64>,
        subscriptions: Arc<AtomicUsize>,
    }

    fn node(seq: u64) -> DagStreamItem {
        DagStreamItem::Node {
            seq,
            id: Hash32([seq as u8; 32]),
            node: Box::new(DagNode {
                body: DagBody {
                    version: 1,
                    network_id: "test".into(),
                    author: Hash32::ZERO,
                    parents: Vec::new(),
                    timestamp_ms: seq,
                    payload: DagPayload::BlobPublished {
                        blob: BlobId::from_bytes([0; 32]),
                        size: seq,
                        mime: None,
                    },
                },
                signature: HexBytes(Vec::new()),
            }),
        }
    }

    /// What the fake answers to the calls the follower never makes.
    fn not_served(method: &str) -> jsonrpsee::types::ErrorObjectOwned {
        jsonrpsee::types::ErrorObject::owned(
            jsonrpsee::types::error::METHOD_NOT_FOUND_CODE,
            format!("{method} is not served by this test's fake feed"),
            None::<()>,
        )
    }

    // Only `dag_subscribe` is served: the lag/resume exchange is what these tests drive, and
    // a real node only closes a subscription for lag after thousands of unread items.
    #[async_trait]
    impl DagApiServer for FakeDag {
        async fn heads(&self) -> RpcResult<DagHeads> {
            Err(not_served("dag_heads"))
        }
        async fn get(&self, _id: Hash32) -> RpcResult<DagNode> {
            Err(not_served("dag_get"))
        }
        async fn subscribe_nodes(
            &self,
            pending: PendingSubscriptionSink,
            from_seq: Option<u64>,
        ) -> SubscriptionResult {
            let first = self.subscriptions.fetch_add(1, Ordering::SeqCst) == 0;
            let sink = pending.accept().await?;
            let from = from_seq.unwrap_or(1);
            for seq in from..=self.last {
                if first && self.lag_after.is_some_and(|n| seq > n) {
                    let close = DagStreamItem::Closed {
                        reason: "lagged".into(),
                        resume_from_seq: seq,
                    };
                    sink.send(jsonrpsee::core::to_json_raw_value(&close)?)
                        .await?;
                    return Ok(());
                }
                if sink
                    .send(jsonrpsee::core::to_json_raw_value(&node(seq))?)
                    .await
                    .is_err()
                {
                    return Ok(()); // the client dropped the subscription
                }
            }
            Ok(())
        }
    }

    /// Follows the fake feed from 1 with `limit`, slowly at first when `slow_start`; returns
    /// the sequence numbers shown and how many subscriptions it took.
    async fn follow_fake(fake: FakeDag, limit: u64, slow_start: bool) -> (Vec<u64>, usize) {
        let subscriptions = fake.subscriptions.clone();
        let server = jsonrpsee::server::Server::builder()
            .build("127.0.0.1:0")
            .await
            .unwrap();
        let url = format!("ws://{}", server.local_addr().unwrap());
        let handle = server.start(fake.into_rpc());
        let client = jsonrpsee::ws_client::WsClientBuilder::default()
            .build(&url)
            .await
            .unwrap();
        let mut shown = Vec::new();
        let followed = follow(
            Some(1),
            Some(limit),
            |from| DagApiClient::subscribe_nodes(&client, from),
            async |seq, (_, node): (Hash32, Box<DagNode>)| {
                assert_eq!(node.body.timestamp_ms, seq);
                if slow_start && shown.is_empty() {
                    // Meanwhile the node sends more than the client buffers (1024).
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                shown.push(seq);
                Ok(())
            },
        );
        tokio::time::timeout(Duration::from_secs(60), followed)
            .await
            .expect("the feed is followed to its limit")
            .unwrap();
        handle.stop().unwrap();
        (shown, subscriptions.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_close_for_lag_resumes_from_its_cursor_without_gaps_or_repeats() {
        let fake = FakeDag {
            last: 6,
            lag_after: Some(3),
            subscriptions: Arc::default(),
        };
        let (shown, subscriptions) = follow_fake(fake, 6, false).await;
        assert_eq!(shown, (1..=6).collect::<Vec<_>>());
        assert_eq!(subscriptions, 2);
    }

    #[tokio::test]
    async fn a_reader_slower_than_the_feed_resumes_where_it_stopped() {
        let fake = FakeDag {
            last: 3000,
            lag_after: None,
            subscriptions: Arc::default(),
        };
        let (shown, subscriptions) = follow_fake(fake, 3000, true).await;
        assert_eq!(shown, (1..=3000).collect::<Vec<_>>());
        assert!(subscriptions >= 2, "the client's buffer overflowed once");
    }
}
