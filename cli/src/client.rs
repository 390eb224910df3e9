//! Client commands: talk to a running node over the WebSocket JSON-RPC API.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use onvm_rpc_api::api::{BlobApiClient, DagApiClient, NodeApiClient, PeerApiClient};
use onvm_rpc_api::types::{BlobStat, UploadStatus};
use onvm_rpc_api::{BlobId, UploadId};
use serde::Serialize;

/// Files at most this big go inline with `blob_put`; larger ones use the chunked upload.
const INLINE_UPLOAD_MAX: u64 = 1024 * 1024;
/// The chunk size we ask for when reading; the node may allow less.
const PREFERRED_CHUNK: u64 = 4 * 1024 * 1024;
/// The client accepts anything the node is willing to send; the node enforces its own limits.
const CLIENT_MESSAGE_MAX: u32 = 256 * 1024 * 1024;

/// A failure the user should see with a specific exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{message} (code {code})")]
    Rpc { code: i32, message: String },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } => 3,
            ClientError::Rpc { .. } => 4,
        }
    }
}

/// Turns a jsonrpsee error into a one-line, user-facing error.
pub(crate) fn rpc_err(e: jsonrpsee::core::ClientError) -> anyhow::Error {
    match e {
        jsonrpsee::core::ClientError::Call(obj) => ClientError::Rpc {
            code: obj.code(),
            message: obj.message().to_string(),
        }
        .into(),
        other => anyhow!("request failed: {other}"),
    }
}

/// [`rpc_err`], with what to do when the node answers "not found" (-32001) for the id given.
pub(crate) fn rpc_err_hint(
    hint: &'static str,
) -> impl FnOnce(jsonrpsee::core::ClientError) -> anyhow::Error {
    move |e| match e {
        jsonrpsee::core::ClientError::Call(obj) if obj.code() == onvm_rpc_api::error::NOT_FOUND => {
            ClientError::Rpc {
                code: obj.code(),
                message: format!("{}: {hint}", obj.message()),
            }
            .into()
        }
        other => rpc_err(other),
    }
}

pub struct Session {
    pub(crate) client: WsClient,
    pub(crate) json: bool,
}

/// The port of a `ws://host:port/...` URL whose host is this machine.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ws://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    local.then(|| port.parse().ok()).flatten()
}

/// Connects with `token`, else the cookie of a node on this machine, else anonymously.
pub async fn connect(url: &str, token: Option<&str>, json: bool) -> Result<Session> {
    let credential = token
        .map(str::to_string)
        .or_else(|| local_port(url).and_then(onvm_node::rpc::cookie::read_for));
    let mut headers = jsonrpsee::ws_client::HeaderMap::new();
    if let Some(credential) = credential {
        let value = jsonrpsee::ws_client::HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| anyhow!("the token contains characters that cannot be sent"))?;
        headers.insert("authorization", value);
    }
    let client = WsClientBuilder::default()
        .set_headers(headers)
        .max_request_size(CLIENT_MESSAGE_MAX)
        .max_response_size(CLIENT_MESSAGE_MAX)
        .request_timeout(Duration::from_secs(300))
        .connection_timeout(Duration::from_secs(10))
        .build(url)
        .await
        .map_err(|e| {
            let reason = e.to_string();
            let hint = if reason.contains("status code: 401") {
                " (the node refused the token: it is unknown, revoked or expired; check --token or ONVM_TOKEN, or `onvm token list` on the node)"
            } else if reason.contains("status code: 403") {
                " (the node refused this client: its web origin or Host is not allowed, or the token is bound to other origins)"
            } else if reason.contains("status code: 429") {
                " (the node has no free connection for this address; retry, or raise rpc.max_connections_per_ip)"
            } else {
                ""
            };
            ClientError::Connect {
                url: url.to_string(),
                reason: format!("{reason}{hint}"),
            }
        })?;
    Ok(Session { client, json })
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn scope_names(scopes: &[onvm_rpc_api::auth::Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// "1 blob", "3 blobs".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How long ago a unix-ms time was, for people: "3 s ago", "never" for 0.
pub(crate) fn ago(at_ms: u64) -> String {
    if at_ms == 0 {
        return "never".into();
    }
    format!("{} ago", human_duration_ms(now_ms().saturating_sub(at_ms)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn human_duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn progress_bar(total: u64, enabled: bool, verb: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(&format!(
        "{verb} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

impl Session {
    pub async fn token_create(&self, request: onvm_rpc_api::auth::TokenRequest) -> Result<()> {
        use onvm_rpc_api::api::TokenApiClient;
        let created = TokenApiClient::create(&self.client, request)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&created);
        }
        println!("{}", created.token);
        eprintln!(
            "token {} with scopes {} (shown once: keep it secret; revoke with `onvm token revoke {}`)",
            created.info.id,
            scope_names(&created.info.scopes),
            created.info.id
        );
        Ok(())
    }

    pub async fn token_list(&self) -> Result<()> {
        use onvm_rpc_api::api::TokenApiClient;
        let tokens = TokenApiClient::list(&self.client).await.map_err(rpc_err)?;
        if self.json {
            return print_json(&tokens);
        }
        if tokens.is_empty() {
            println!("no tokens (create one with `onvm token create --scope read`)");
        }
        for t in tokens {
            let expires = match t.expires_at_ms {
                Some(ms) => format!(
                    "expires in {}",
                    human_duration_ms(ms.saturating_sub(now_ms()),)
                ),
                None => "no expiry".into(),
            };
            let origins = if t.origins.is_empty() {
                "any origin".to_string()
            } else {
                t.origins.join(" ")
            };
            println!(
                "{}  {}  {}  {}  {}",
                t.id,
                scope_names(&t.scopes),
                origins,
                expires,
                t.label.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }

    pub async fn token_revoke(&self, id: &str) -> Result<()> {
        use onvm_rpc_api::api::TokenApiClient;
        let revoked = TokenApiClient::revoke(&self.client, id.to_string())
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&serde_json::json!({ "revoked": revoked }));
        }
        if revoked {
            println!("revoked");
            Ok(())
        } else {
            bail!("no token with id `{id}` (see `onvm token list`)")
        }
    }

    pub async fn node_info(&self) -> Result<()> {
        let info = NodeApiClient::info(&self.client).await.map_err(rpc_err)?;
        if self.json {
            return print_json(&info);
        }
        println!("endpoint id    {}", info.endpoint_id);
        println!("version        {}", info.version);
        println!("network        {}", info.network_id);
        println!("offline        {}", info.offline);
        println!("addresses      {}", info.addresses.join(", "));
        let home = match (&info.relay_url, info.relay_connected) {
            (Some(url), true) => format!("{url} (connected)"),
            (Some(url), false) => format!("{url} (not connected)"),
            (None, _) => "-".to_string(),
        };
        println!("home relay     {home}");
        if !info.relays.is_empty() {
            println!(
                "relays         {}{}",
                info.relays.join(", "),
                if info.relay_only { " (relay only)" } else { "" }
            );
        }
        println!("bls public key {}", info.bls_public_key);
        println!("uptime         {}s", info.uptime_secs);
        println!("ticket         {}", info.ticket);
        Ok(())
    }

    pub async fn ticket(&self) -> Result<()> {
        let info = NodeApiClient::info(&self.client).await.map_err(rpc_err)?;
        if self.json {
            return print_json(&serde_json::json!({ "ticket": info.ticket }));
        }
        println!("{}", info.ticket);
        Ok(())
    }

    pub async fn peers(&self) -> Result<()> {
        let peers = PeerApiClient::list(&self.client).await.map_err(rpc_err)?;
        if self.json {
            return print_json(&peers);
        }
        for p in &peers {
            println!(
                "{}  {:<8} {:>9}  last seen {}{}{}",
                p.endpoint_id,
                p.connection,
                p.latency_ms
                    .map(|l| format!("{l:.2} ms"))
                    .unwrap_or_else(|| "-".into()),
                ago(p.last_seen_ms),
                if p.suspected { "  suspected down" } else { "" },
                p.last_error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
        eprintln!("{}", count(peers.len(), "peer"));
        Ok(())
    }

    pub async fn dag_heads(&self) -> Result<()> {
        let h = DagApiClient::heads(&self.client).await.map_err(rpc_err)?;
        if self.json {
            return print_json(&h);
        }
        for id in &h.heads {
            println!("{id}");
        }
        // Refused payloads are stored nodes whose effect this node withheld: worth a look.
        for r in &h.refused {
            eprintln!("refused payload of {}: {}", r.id, r.reason);
        }
        eprintln!(
            "{} heads, {} nodes, {} deferred calls",
            h.heads.len(),
            h.count,
            h.deferred
        );
        Ok(())
    }

    /// One DAG node as JSON (with or without --json: it has no shorter form).
    pub async fn dag_get(&self, id: onvm_rpc_api::Hash32) -> Result<()> {
        let node = DagApiClient::get(&self.client, id)
            .await
            .map_err(rpc_err_hint(
                "ids are printed by `onvm dag-heads` and `onvm watch-dag`; a node made on another node appears here once the DAG has synced",
            ))?;
        print_json(&node)
    }

    pub async fn connect_peer(&self, ticket: &str) -> Result<()> {
        let p = PeerApiClient::connect(&self.client, ticket.to_string())
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&p);
        }
        println!(
            "connected to {} ({}, {})",
            p.endpoint_id,
            p.connection,
            p.latency_ms
                .map(|l| format!("{l:.2} ms"))
                .unwrap_or_default()
        );
        Ok(())
    }

    pub async fn health(&self) -> Result<()> {
        let health = NodeApiClient::health(&self.client).await.map_err(rpc_err)?;
        if self.json {
            print_json(&health)?;
        } else {
            println!("{}", if health.ready { "ready" } else { "NOT READY" });
            for c in &health.checks {
                println!(
                    "  {:<10} {:<4} {}",
                    c.name,
                    if c.ok { "ok" } else { "FAIL" },
                    c.detail
                );
            }
        }
        match health.reason {
            None => Ok(()),
            Some(reason) => bail!("node is not ready: {reason}"),
        }
    }

    pub async fn metrics(&self) -> Result<()> {
        let m = NodeApiClient::metrics(&self.client)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&m);
        }
        println!("uptime {}s", m.uptime_secs);
        for (k, v) in m.counters.iter().chain(m.gauges.iter()) {
            println!("  {k:<24} {v}");
        }
        Ok(())
    }

    pub async fn upload_blob(
        &self,
        file: &Path,
        mime: Option<String>,
        resume: Option<UploadId>,
    ) -> Result<()> {
        let mut f =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f
            .metadata()
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        let stat = if size <= INLINE_UPLOAD_MAX && resume.is_none() {
            let mut data = Vec::with_capacity(size as usize);
            f.read_to_end(&mut data)
                .with_context(|| format!("reading {}", file.display()))?;
            BlobApiClient::put(&self.client, data.into(), mime)
                .await
                .map_err(rpc_err)?
        } else {
            self.upload_chunked(&mut f, size, mime, resume).await?
        };
        if self.json {
            return print_json(&stat);
        }
        println!("{}", stat.id);
        eprintln!("stored {} ({})", human_bytes(stat.size), file.display());
        Ok(())
    }

    /// Drops an unfinished chunked upload and its data on the node.
    pub async fn abort_upload(&self, id: UploadId) -> Result<()> {
        let aborted = BlobApiClient::upload_abort(&self.client, id.clone())
            .await
            .map_err(rpc_err)?;
        if !aborted {
            bail!(
                "the node has no upload {id}: it was finished, aborted already, or expired after blobs.upload_ttl_secs of silence (nothing to abort)"
            );
        }
        if self.json {
            return print_json(&serde_json::json!({ "upload_id": id, "aborted": true }));
        }
        println!("aborted upload {id}");
        Ok(())
    }

    async fn upload_chunked(
        &self,
        f: &mut std::fs::File,
        size: u64,
        mime: Option<String>,
        resume: Option<UploadId>,
    ) -> Result<BlobStat> {
        use std::io::{Seek, SeekFrom};
        let mut status: UploadStatus = match resume {
            Some(id) => BlobApiClient::upload_status(&self.client, id)
                .await
                .map_err(rpc_err)?,
            None => BlobApiClient::upload_begin(&self.client, size, mime)
                .await
                .map_err(rpc_err)?,
        };
        if status.size != size {
            bail!(
                "upload {} was declared as {} bytes but the file has {size}",
                status.upload_id,
                status.size
            );
        }
        if !self.json {
            eprintln!(
                "upload id {} (resume with --resume {})",
                status.upload_id, status.upload_id
            );
        }
        // Hash locally while reading, so the node proves it stored exactly our bytes.
        let mut hasher = blake3::Hasher::new();
        if status.received > 0 {
            let mut prefix = f.try_clone()?.take(status.received);
            std::io::copy(&mut prefix, &mut hasher).context("hashing the already uploaded part")?;
        }
        f.seek(SeekFrom::Start(status.received))?;
        let chunk = status.max_chunk_bytes.clamp(1, PREFERRED_CHUNK) as usize;
        let bar = progress_bar(size, !self.json, "uploading");
        bar.set_position(status.received);
        let mut buf = vec![0u8; chunk];
        while status.received < size {
            let want = chunk.min((size - status.received) as usize);
            f.read_exact(&mut buf[..want])
                .context("reading the file (did it change?)")?;
            hasher.update(&buf[..want]);
            status = BlobApiClient::upload_append(
                &self.client,
                status.upload_id.clone(),
                status.received,
                buf[..want].to_vec().into(),
            )
            .await
            .map_err(rpc_err)
            .with_context(|| {
                format!(
                    "appending at offset {} of upload {}",
                    status.received, status.upload_id
                )
            })?;
            bar.set_position(status.received);
        }
        bar.finish_and_clear();
        let expected = BlobId::from_bytes(*hasher.finalize().as_bytes());
        BlobApiClient::upload_finish(&self.client, status.upload_id.clone(), Some(expected))
            .await
            .map_err(rpc_err)
    }

    pub async fn get_blob(&self, id: BlobId, out: &Path) -> Result<()> {
        let stat = BlobApiClient::stat(&self.client, id)
            .await
            .map_err(rpc_err)?;
        let to_stdout = out == Path::new("-");
        let (tmp_path, mut sink): (Option<PathBuf>, Box<dyn Write>) = if to_stdout {
            (None, Box::new(std::io::stdout().lock()))
        } else {
            let tmp = out.with_extension(format!("onvm-partial-{}", std::process::id()));
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            (Some(tmp), Box::new(std::io::BufWriter::new(file)))
        };
        let result = self.download(&stat, &mut *sink).await;
        let result = result.and_then(|()| sink.flush().context("writing the output"));
        drop(sink);
        match (result, tmp_path) {
            (Ok(()), Some(tmp)) => {
                std::fs::rename(&tmp, out)
                    .with_context(|| format!("moving into {}", out.display()))?;
            }
            (Ok(()), None) => {}
            (Err(e), tmp) => {
                if let Some(tmp) = tmp {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(e);
            }
        }
        if self.json {
            return print_json(&stat);
        }
        if !to_stdout {
            eprintln!(
                "wrote {} to {} (BLAKE3 verified: {})",
                human_bytes(stat.size),
                out.display(),
                stat.id
            );
        }
        Ok(())
    }

    async fn download(&self, stat: &BlobStat, sink: &mut dyn Write) -> Result<()> {
        let mut hasher = blake3::Hasher::new();
        let bar = progress_bar(stat.size, !self.json, "downloading");
        let mut offset = 0u64;
        loop {
            let chunk =
                BlobApiClient::get(&self.client, stat.id, Some(offset), Some(PREFERRED_CHUNK))
                    .await
                    .map_err(rpc_err)
                    .with_context(|| format!("reading {} at offset {offset}", stat.id))?;
            let data = chunk.data_base64.0;
            hasher.update(&data);
            sink.write_all(&data).context("writing the output")?;
            offset += data.len() as u64;
            bar.set_position(offset);
            if chunk.eof {
                break;
            }
            if data.is_empty() {
                bail!("node returned an empty chunk at offset {offset} before the end");
            }
        }
        bar.finish_and_clear();
        let actual = BlobId::from_bytes(*hasher.finalize().as_bytes());
        if actual != stat.id {
            bail!(
                "downloaded bytes hash to {actual}, not {}: the node sent corrupt data",
                stat.id
            );
        }
        Ok(())
    }

    pub async fn blob_stat(&self, id: BlobId) -> Result<()> {
        let stat = BlobApiClient::stat(&self.client, id)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&stat);
        }
        println!("id       {}", stat.id);
        println!("size     {} ({})", stat.size, human_bytes(stat.size));
        println!("mime     {}", stat.mime.as_deref().unwrap_or("-"));
        println!("created  {} ms", stat.created_at_ms);
        Ok(())
    }

    pub async fn list_blobs(
        &self,
        cursor: Option<String>,
        limit: Option<u32>,
        all: bool,
    ) -> Result<()> {
        let mut cursor = cursor;
        let mut items = Vec::new();
        let next = loop {
            let page = BlobApiClient::list(&self.client, cursor.clone(), limit)
                .await
                .map_err(rpc_err)?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) if all => cursor = Some(c),
                other => break other,
            }
        };
        if self.json {
            return print_json(&serde_json::json!({ "items": items, "next_cursor": next }));
        }
        for s in &items {
            println!(
                "{}  {:>10}  {}",
                s.id,
                human_bytes(s.size),
                s.mime.as_deref().unwrap_or("-")
            );
        }
        match next {
            Some(c) => eprintln!(
                "{} blobs shown; more with --cursor {c} (or --all)",
                items.len()
            ),
            None => eprintln!("{}", count(items.len(), "blob")),
        }
        Ok(())
    }
}
