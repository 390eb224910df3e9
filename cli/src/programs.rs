//! Program commands: deploy, execute, inspect state, receipts and proofs, verify offline.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use onvm_rpc_api::api::{NodeApiClient, ProgramApiClient, ReceiptApiClient, StateApiClient};
use onvm_rpc_api::caller::sign_call;
use onvm_rpc_api::committee::Evidence;
use onvm_rpc_api::program::{
    DeployRequest, ExecuteOptions, ExecuteResult, SignedReceipt, verify_receipt,
};
use onvm_rpc_api::smt::verify_proof;
use onvm_rpc_api::{ProgramId, ReceiptId};

use crate::client::{ClientError, Session, print_json, rpc_err};
use crate::keys::CallerKey;

pub fn input_bytes(file: Option<&Path>, json: Option<&str>, text: Option<&str>) -> Result<Vec<u8>> {
    match (file, json, text) {
        (Some(f), _, _) => std::fs::read(f).with_context(|| format!("reading {}", f.display())),
        (None, Some(j), _) => {
            serde_json::from_str::<serde_json::Value>(j)
                .context("--input-json is not valid JSON")?;
            Ok(j.as_bytes().to_vec())
        }
        (None, None, Some(t)) => Ok(t.as_bytes().to_vec()),
        (None, None, None) => Ok(Vec::new()),
    }
}

/// Output as text when it is UTF-8, else base64 (marked).
fn show_output(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

fn print_result_summary(r: &ExecuteResult) {
    eprintln!(
        "outcome {}  fuel {}  root {} -> {}",
        r.outcome.kind(),
        r.fuel_used,
        r.state_root_in,
        r.state_root_out
    );
    if let Some(rc) = &r.receipt {
        eprintln!("receipt {} (height {})", rc.id, rc.receipt.height);
        if rc.receipt.caller != onvm_rpc_api::Hash32::ZERO {
            eprintln!("caller  {} (signed)", rc.receipt.caller);
        }
    }
    for line in &r.logs {
        eprintln!("log: {line}");
    }
}

/// The receipt fields (by their JSON names) in which two receipts differ.
fn differing_fields(
    a: &onvm_rpc_api::program::ExecutionReceipt,
    b: &onvm_rpc_api::program::ExecutionReceipt,
) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

impl Session {
    /// Deploys the wasm in `file` with the rest of `request`.
    pub async fn deploy(&self, file: &Path, request: DeployRequest) -> Result<()> {
        let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let request = DeployRequest {
            wasm_base64: Some(wasm.into()),
            ..request
        };
        let result = ProgramApiClient::deploy(&self.client, request)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&result);
        }
        println!("{}", result.program_id);
        let m = &result.manifest.manifest;
        eprintln!(
            "{} program (code {}, {} bytes, entrypoints {})",
            if result.created {
                "deployed"
            } else {
                "already deployed:"
            },
            m.code,
            m.code_size,
            m.entrypoints.join(", ")
        );
        Ok(())
    }

    /// Signs a call as `key`: the network id comes from the node, the entrypoint (when not
    /// given) from the program, a fresh request id is chosen when none was given, and the fuel
    /// defaults to `DEFAULT_FUEL`, since all of them are signed.
    pub async fn sign_call(
        &self,
        key: &CallerKey,
        program: ProgramId,
        input: &[u8],
        options: &mut ExecuteOptions,
        valid_for_secs: u64,
    ) -> Result<()> {
        let (network_id, entrypoint) = self
            .signing_context(program, options.entrypoint.clone())
            .await?;
        let request_id = options
            .request_id
            .get_or_insert_with(|| hex::encode(rand::random::<[u8; 16]>()))
            .clone();
        // The fuel, the dry-run flag and a client timestamp are signed too: the fuel is named
        // (the node's default otherwise), so what the receipt records is what was signed.
        let fuel = *options
            .fuel
            .get_or_insert(onvm_rpc_api::program::DEFAULT_FUEL);
        let terms = onvm_rpc_api::caller::SignedTerms {
            read_only: options.read_only,
            timestamp_ms: options.timestamp_ms,
            ..onvm_rpc_api::caller::SignedTerms::call(expiry_in(valid_for_secs), fuel)
        };
        options.signed = Some(sign_call(
            key.signing_key(),
            &network_id,
            &program,
            &entrypoint,
            input,
            &request_id,
            &terms,
        ));
        options.entrypoint = Some(entrypoint);
        Ok(())
    }

    /// What a signature binds that the user may not have typed: the node's network id, and the
    /// program's default entrypoint when none was given.
    pub async fn signing_context(
        &self,
        program: ProgramId,
        entrypoint: Option<String>,
    ) -> Result<(String, String)> {
        let network_id = NodeApiClient::info(&self.client)
            .await
            .map_err(rpc_err)?
            .network_id;
        let entrypoint = match entrypoint {
            Some(e) => e,
            None => ProgramApiClient::info(&self.client, program)
                .await
                .map_err(rpc_err)?
                .manifest
                .manifest
                .entrypoints
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        Ok((network_id, entrypoint))
    }

    pub async fn execute(
        &self,
        program: ProgramId,
        input: Vec<u8>,
        options: ExecuteOptions,
    ) -> Result<()> {
        let result =
            ProgramApiClient::execute(&self.client, program, input.into(), Some(options)).await;
        match result {
            Ok(r) => {
                if self.json {
                    return print_json(&r);
                }
                println!("{}", show_output(&r.output_base64.0));
                print_result_summary(&r);
                Ok(())
            }
            Err(jsonrpsee::core::ClientError::Call(obj))
                if obj.code() == onvm_rpc_api::error::EXECUTION_FAILED =>
            {
                // Show what the failed call left behind (its receipt) before failing.
                let data = onvm_rpc_api::error::error_data(&obj);
                if let Some(result) = data
                    .as_ref()
                    .and_then(|d| d.detail.get("result"))
                    .and_then(|r| serde_json::from_value::<ExecuteResult>(r.clone()).ok())
                {
                    if self.json {
                        print_json(&result)?;
                    } else {
                        print_result_summary(&result);
                    }
                }
                Err(ClientError::Rpc {
                    code: obj.code(),
                    message: obj.message().to_string(),
                }
                .into())
            }
            Err(e) => Err(rpc_err(e)),
        }
    }

    pub async fn program_info(&self, program: ProgramId) -> Result<()> {
        let info = ProgramApiClient::info(&self.client, program)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&info);
        }
        let m = &info.manifest.manifest;
        println!("program      {}", info.program_id);
        println!("code         {} ({} bytes)", m.code, m.code_size);
        println!("entrypoints  {}", m.entrypoints.join(", "));
        println!("salt         {:?}", m.salt);
        println!("blob refs    {}", m.blob_refs.len());
        println!("engine       {}", m.engine);
        println!("deployer     {}", m.deployer);
        println!(
            "callers      {}",
            if m.require_signed_calls {
                "signed calls only"
            } else {
                "signed or anonymous"
            }
        );
        println!("state root   {}", info.state_root);
        println!("height       {}", info.height);
        println!("keys         {}", info.keys);
        Ok(())
    }

    pub async fn program_catalog(&self, cursor: Option<String>, limit: Option<u32>) -> Result<()> {
        let page = ProgramApiClient::list(&self.client, cursor, limit)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&page);
        }
        for p in &page.items {
            println!(
                "{}  height {:>6}  keys {:>6}  {}",
                p.program_id,
                p.height,
                p.keys,
                p.manifest.manifest.entrypoints.join(",")
            );
        }
        if let Some(c) = page.next_cursor {
            eprintln!("more with --cursor {c}");
        }
        Ok(())
    }

    pub async fn program_receipts(
        &self,
        program: ProgramId,
        before_height: Option<u64>,
        limit: Option<u32>,
        save_dir: Option<&Path>,
    ) -> Result<()> {
        let page = ReceiptApiClient::list(&self.client, program, before_height, limit)
            .await
            .map_err(rpc_err)?;
        if let Some(dir) = save_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for r in &page.items {
                let path = dir.join(format!("{}.json", r.id));
                std::fs::write(&path, serde_json::to_vec_pretty(r)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if self.json {
            return print_json(&page);
        }
        for r in &page.items {
            println!(
                "{:>6}  {}  {:<14} fuel {:>10}  root {}",
                r.receipt.height,
                r.id,
                r.receipt.outcome.kind(),
                r.receipt.fuel_used,
                r.receipt.state_root_out
            );
        }
        if let Some(h) = page.next_before_height {
            eprintln!("older receipts with --before-height {h}");
        }
        Ok(())
    }

    /// Proposals this node refused while attesting a program's calls: the sequencer's receipt
    /// and the one this node computed, as a JSON list or a short table.
    pub async fn receipt_evidence(&self, program: ProgramId) -> Result<()> {
        // A program this node does not know has no evidence either: say it is unknown.
        ProgramApiClient::info(&self.client, program)
            .await
            .map_err(crate::client::rpc_err_hint(
                "check the id with `onvm program-catalog`; a program deployed on another node appears here once the DAG has synced",
            ))?;
        let evidence = ReceiptApiClient::evidence(&self.client, program)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&evidence);
        }
        if evidence.is_empty() {
            eprintln!(
                "no disagreements recorded: this node agreed with every proposal of {program} it attested"
            );
            return Ok(());
        }
        println!(
            "{:<8} {:<14} {:<68} {:<68} differs in",
            "height", "recorded", "proposed", "computed here"
        );
        for e in &evidence {
            match e {
                Evidence::Disagreement {
                    height,
                    proposed,
                    computed,
                    recorded_at_ms,
                } => println!(
                    "{:<8} {:<14} {:<68} {:<68} {}",
                    height,
                    crate::client::ago(*recorded_at_ms),
                    proposed.id(),
                    computed.id(),
                    differing_fields(proposed, computed).join(",")
                ),
                Evidence::Equivocation(q) => println!(
                    "{:<8} {:<14} member {} ({}) signed two {}s in round {}",
                    q.height,
                    crate::client::ago(q.recorded_at_ms),
                    q.member_index,
                    q.member,
                    q.what,
                    q.round
                ),
            }
        }
        eprintln!(
            "{} records (--json shows the receipts and signed messages in full)",
            evidence.len()
        );
        Ok(())
    }

    pub async fn program_committee(&self, id: ProgramId, out: Option<&Path>) -> Result<()> {
        let c = ProgramApiClient::committee(&self.client, id)
            .await
            .map_err(rpc_err)?;
        write_or_print(&c, out)
    }

    pub async fn get_receipt(&self, id: ReceiptId, out: Option<&Path>) -> Result<()> {
        let r = ReceiptApiClient::get(&self.client, id)
            .await
            .map_err(rpc_err)?;
        write_or_print(&r, out)
    }

    pub async fn state_get(&self, program: ProgramId, key: &str) -> Result<()> {
        let v = StateApiClient::get(&self.client, program, key.as_bytes().to_vec().into())
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&v);
        }
        match v.value_base64 {
            Some(value) => println!("{}", show_output(&value.0)),
            None => bail!("key {key:?} is not set (state root {})", v.state_root),
        }
        Ok(())
    }

    pub async fn state_proof(&self, program: ProgramId, key: &str, verify: bool) -> Result<()> {
        let p = StateApiClient::proof(&self.client, program, key.as_bytes().to_vec().into())
            .await
            .map_err(rpc_err)?;
        if verify {
            verify_proof(
                &p.state_root,
                key.as_bytes(),
                p.value_base64.as_ref().map(|v| v.0.as_slice()),
                &p.proof,
            )
            .map_err(|e| anyhow!("the node's proof does not verify: {e}"))?;
        }
        if self.json {
            // With --verify, the result of the local check rides along (an error never gets here).
            let mut value = serde_json::to_value(&p)?;
            if verify && let Some(map) = value.as_object_mut() {
                map.insert("verified_locally".into(), serde_json::Value::Bool(true));
            }
            return print_json(&value);
        }
        let what = if p.value_base64.is_some() {
            "inclusion"
        } else {
            "absence"
        };
        println!(
            "{what} proof for {key:?} under root {} ({} siblings)",
            p.state_root,
            p.proof.siblings.len()
        );
        if verify {
            println!("verified locally: ok");
        }
        Ok(())
    }
}

/// `verify-receipt`: pure and offline.
/// Pretty JSON into `out`, or on stdout.
fn write_or_print(value: &impl serde::Serialize, out: Option<&Path>) -> Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    match out {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{json}");
            Ok(())
        }
    }
}

pub fn verify_receipt_file(
    file: &Path,
    network_id: Option<&str>,
    bls_key: Option<&str>,
    committee: Option<&Path>,
    json: bool,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let receipt: SignedReceipt = serde_json::from_str(&text)
        .context("not a receipt (JSON from get-receipt or program-receipts --save-dir)")?;
    let key = bls_key
        .map(|k| hex::decode(k.trim()).context("--bls-key is not hex"))
        .transpose()?;
    verify_receipt(&receipt, network_id, key.as_deref())
        .map_err(|e| anyhow!("receipt {} is INVALID: {e}", receipt.id))?;
    let mut signers = None;
    if let Some(path) = committee {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let committee: onvm_rpc_api::committee::Committee = serde_json::from_str(&text)
            .context("not a committee (JSON from `onvm program-committee`)")?;
        let verified = onvm_rpc_api::committee::VerifiedCommittee::new(committee)
            .map_err(|e| anyhow!("the committee is invalid: {e}"))?;
        let network = network_id.unwrap_or(&receipt.receipt.network_id);
        let v = onvm_rpc_api::committee::verify_signed(&receipt, &verified, network);
        if !v.valid {
            bail!(
                "receipt {} is INVALID: {}",
                receipt.id,
                v.reason.unwrap_or_default()
            );
        }
        signers = Some((v.signers.len(), v.threshold, v.committee_size));
    }
    if json {
        return print_json(&serde_json::json!({
            "valid": true,
            "receipt_id": receipt.id,
            "height": receipt.receipt.height,
            "committee_signers": signers.map(|s| s.0),
        }));
    }
    println!("receipt {} is valid", receipt.id);
    println!(
        "  program {} height {} outcome {}",
        receipt.receipt.program_id,
        receipt.receipt.height,
        receipt.receipt.outcome.kind()
    );
    println!(
        "  signed by BLS key {}",
        hex::encode(&receipt.signer_bls_key.0)
    );
    if let Some((n, threshold, size)) = signers {
        println!("  attested by {n} of {size} committee members (threshold {threshold})");
    }
    Ok(())
}

/// Unix ms `secs` from now: when a signature made now expires.
pub fn expiry_in(secs: u64) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now_ms.saturating_add(secs.saturating_mul(1000))
}
