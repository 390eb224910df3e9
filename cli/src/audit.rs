//! `onvm audit`: replays every committed call of a program from its initial state, on this
//! machine, with the same VM the node uses, and checks every receipt against the replay: its
//! committee signatures, state roots, write digest, output, fuel and outcome, and that no call
//! id was applied twice. Trusts nothing
//! the node says except as data to check: code and inputs are checked against their hashes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use onvm_node::state::MemNodes;
use onvm_node::vm::{CallContext, CallRequest, MemoryState, StateView, Vm};
use onvm_rpc_api::api::{BlobApiClient, ProgramApiClient, ReceiptApiClient};
use onvm_rpc_api::committee::{VerifiedCommittee, verify_signed};
use onvm_rpc_api::program::{SignedReceipt, call_seed, verify_manifest, write_digest};
use onvm_rpc_api::{BlobId, Hash32, ProgramId, smt};

use crate::client::{Session, print_json, rpc_err};

impl Session {
    async fn whole_blob(&self, id: BlobId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let chunk = BlobApiClient::get(&self.client, id, Some(out.len() as u64), None)
                .await
                .map_err(rpc_err)?;
            out.extend_from_slice(&chunk.data_base64.0);
            if chunk.eof {
                break;
            }
        }
        if Hash32::of(&out).0 != *id.as_bytes() {
            bail!("blob {id} as served does not match its hash");
        }
        Ok(out)
    }

    async fn all_receipts(&self, program: ProgramId) -> Result<Vec<SignedReceipt>> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = ReceiptApiClient::list(&self.client, program, before, Some(1000))
                .await
                .map_err(rpc_err)?;
            all.extend(page.items);
            match page.next_before_height {
                Some(h) => before = Some(h),
                None => break,
            }
        }
        all.sort_by_key(|r| r.receipt.height);
        Ok(all)
    }

    pub async fn audit(&self, program: ProgramId) -> Result<()> {
        let info = ProgramApiClient::info(&self.client, program)
            .await
            .map_err(rpc_err)?;
        verify_manifest(&info.manifest).map_err(|e| anyhow!("the manifest is invalid: {e}"))?;
        let manifest = info.manifest.manifest.clone();
        let committee = VerifiedCommittee::new(manifest.committee())
            .map_err(|e| anyhow!("the committee is invalid: {e}"))?;
        let wasm = self.whole_blob(manifest.code).await?;
        let mut refs = HashMap::new();
        for r in &manifest.blob_refs {
            refs.insert(*r, Arc::new(self.whole_blob(*r).await?));
        }
        let refs = Arc::new(refs);
        let receipts = self.all_receipts(program).await?;

        // The node's default VM limits; the fuel of each call comes from its receipt.
        let limits = onvm_node::config::VmConfig {
            max_concurrent_calls: 1,
            ..Default::default()
        };
        let vm = Vm::new(limits).map_err(|e| anyhow!("starting the VM: {e}"))?;
        let compiled = vm
            .compile(&wasm, &manifest.entrypoints)
            .map_err(|e| anyhow!("the program does not compile here: {e}"))?;

        // Shared with each call and changed in place once the call has returned (no copy).
        let mut state = Arc::new(MemoryState::default());
        let mut nodes = MemNodes::default();
        let mut root = manifest.initial_state_root;
        let mut call_ids = HashSet::new();
        for (expected_height, signed) in receipts.iter().enumerate() {
            let r = &signed.receipt;
            let fail = |what: String| -> anyhow::Error {
                anyhow!(
                    "audit FAILED at height {}: {what} (receipt {})",
                    r.height,
                    signed.id
                )
            };
            if r.engine != onvm_node::vm::ENGINE_FINGERPRINT {
                bail!(
                    "audit CANNOT REPLAY height {}: the receipt was made by engine `{}`, this auditor runs `{}` (fuel costs and semantics differ); audit with a matching onvm version",
                    r.height,
                    r.engine,
                    onvm_node::vm::ENGINE_FINGERPRINT
                );
            }
            if r.height != expected_height as u64 {
                return Err(fail(format!("expected height {expected_height}")));
            }
            if !call_ids.insert(r.call_id) {
                return Err(fail(format!(
                    "call {} was already applied at an earlier height",
                    r.call_id
                )));
            }
            let v = verify_signed(signed, &committee, &manifest.network_id);
            if !v.valid {
                return Err(fail(format!(
                    "signatures: {}",
                    v.reason.unwrap_or_default()
                )));
            }
            if manifest.require_signed_calls && r.caller == Hash32::ZERO {
                return Err(fail(
                    "an anonymous call, but the program requires signed calls".into(),
                ));
            }
            if r.state_root_in != root {
                return Err(fail(format!(
                    "state_root_in {} but the replay is at {root}",
                    r.state_root_in
                )));
            }
            let input = ReceiptApiClient::input(&self.client, signed.id)
                .await
                .map_err(rpc_err)?
                .0;
            if Hash32::of(&input) != r.input_hash {
                return Err(fail("the input served does not match input_hash".into()));
            }
            let seed = call_seed(&program, r.height, &root, &r.input_hash);
            if seed != r.seed {
                return Err(fail("seed".into()));
            }
            let request = CallRequest {
                entrypoint: r.entrypoint.clone(),
                input,
                fuel: r.fuel_limit,
                timeout: Duration::from_secs(60),
                read_only: false,
                context: CallContext {
                    height: r.height,
                    timestamp_ms: r.timestamp_ms,
                    seed,
                    caller: r.caller,
                    state_root_in: root,
                },
                blobs: refs.clone(),
                cancel: None,
            };
            let view: Arc<dyn StateView> = state.clone();
            let result = vm.call(&compiled, request, view);
            if !result.outcome.is_reproducible() {
                // A committed call never has such an outcome: this machine stopped the replay.
                bail!(
                    "audit INCOMPLETE at height {}: the replay on this machine stopped early ({}); nothing is known to be wrong, run the audit again",
                    r.height,
                    result.outcome.kind()
                );
            }
            let digest = write_digest(
                result
                    .writes
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref())),
            );
            let checks = [
                ("outcome", result.outcome == r.outcome),
                ("fuel_used", result.fuel_used == r.fuel_used),
                ("output_hash", Hash32::of(&result.output) == r.output_hash),
                ("output_len", result.output.len() as u64 == r.output_len),
                ("write_digest", digest == r.write_digest),
            ];
            if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
                return Err(fail(format!("{field} differs from the replay")));
            }
            Arc::make_mut(&mut state).apply(&result.writes);
            for (key, value) in &result.writes {
                let vh = value.as_deref().map(smt::value_hash);
                root = onvm_node::state::update(&mut nodes, root, &smt::key_hash(key), vh.as_ref())
                    .context("updating the replayed tree")?;
            }
            if root != r.state_root_out {
                return Err(fail(format!(
                    "state_root_out {} but the replay reached {root}",
                    r.state_root_out
                )));
            }
        }
        // The program may have moved on while the audit ran (a live program): the node's state
        // is then compared at the height the replay reached only through the receipts, which
        // were each checked above; at equal heights the roots must agree.
        let now = ProgramApiClient::info(&self.client, program)
            .await
            .map_err(rpc_err)?;
        let replayed = receipts.len() as u64;
        if now.height < replayed || (now.height == replayed && now.state_root != root) {
            bail!(
                "audit FAILED: the node reports height {} root {}, the replay of {replayed} receipts reached {root}",
                now.height,
                now.state_root,
            );
        }
        if now.height > replayed {
            eprintln!(
                "note: {} more calls were committed while the audit ran (height {}); audit again to include them",
                now.height - replayed,
                now.height
            );
        }
        if self.json {
            return print_json(&serde_json::json!({
                "ok": true, "program_id": program, "calls": receipts.len(), "state_root": root,
            }));
        }
        println!(
            "audit OK: {} calls of {program} replayed; every receipt and root matches (final root {root})",
            receipts.len()
        );
        Ok(())
    }
}
