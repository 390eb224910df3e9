//! Job commands: submit (optionally following progress live), status, output, cancel, list, watch.

use std::path::Path;

use anyhow::{Context, Result, bail};
use jsonrpsee::core::client::Subscription;
use onvm_rpc_api::api::JobApiClient;
use onvm_rpc_api::jobs::{JobEvent, JobFilter, JobInfo, JobStatus, JobStreamItem, SubmitJob};
use onvm_rpc_api::{JobId, ProgramId};

use crate::client::{Session, print_json, rpc_err};

fn show_event(e: &JobEvent) -> String {
    let mut line = format!(
        "#{:<6} {} {:<10} attempt {} fuel {}",
        e.seq,
        e.job_id,
        e.status.as_str(),
        e.attempt,
        e.fuel_used
    );
    if let Some(err) = &e.error {
        line.push_str(&format!("  error: {err}"));
    }
    line
}

fn show_job(j: &JobInfo) {
    println!("job          {}", j.job_id);
    println!("program      {}", j.program_id);
    println!("request id   {}", j.request_id);
    println!("status       {}", j.status.as_str());
    println!(
        "attempts     {} (max retries {})",
        j.attempts.len(),
        j.max_retries
    );
    for a in &j.attempts {
        println!(
            "  #{} {} fuel {}{}",
            a.number,
            a.outcome.as_deref().unwrap_or("running"),
            a.fuel_used,
            a.error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &j.error {
        println!("error        {e}");
    }
    if let Some(b) = &j.output_blob {
        println!("output       {b} ({} bytes)", j.output_size.unwrap_or(0));
    }
}

pub struct SubmitArgs {
    pub program_id: ProgramId,
    pub input: Vec<u8>,
    pub request_id: String,
    pub max_retries: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub wait: bool,
    /// Sign the job as this caller, valid for this many seconds.
    pub key: Option<(crate::keys::CallerKey, u64)>,
}

impl Session {
    pub async fn submit_job(&self, args: SubmitArgs) -> Result<()> {
        let mut request = SubmitJob {
            program_id: args.program_id,
            request_id: args.request_id,
            input_base64: None,
            input_blob: None,
            entrypoint: None,
            max_retries: args.max_retries,
            timeout_ms: args.timeout_ms,
            fuel: args.fuel,
            metadata: None,
            signed: None,
        };
        if let Some((key, valid_for_secs)) = &args.key {
            // The entrypoint, the retry count and the fuel are signed, so they are named.
            let (network_id, entrypoint) = self.signing_context(args.program_id, None).await?;
            let max_retries = *request
                .max_retries
                .get_or_insert(onvm_node::config::JobsConfig::default().default_max_retries);
            let fuel = *request
                .fuel
                .get_or_insert(onvm_rpc_api::program::DEFAULT_FUEL);
            request.signed = Some(onvm_rpc_api::caller::sign_call(
                key.signing_key(),
                &network_id,
                &args.program_id,
                &entrypoint,
                &args.input,
                &request.request_id,
                &onvm_rpc_api::caller::SignedTerms::job(
                    crate::programs::expiry_in(*valid_for_secs),
                    fuel,
                    max_retries,
                ),
            ));
            request.entrypoint = Some(entrypoint);
        }
        request.input_base64 = Some(args.input.into());
        let submitted = JobApiClient::submit(&self.client, request)
            .await
            .map_err(rpc_err)?;
        let id = submitted.job.job_id;
        if !args.wait {
            if self.json {
                return print_json(&submitted);
            }
            println!("{id}");
            if !submitted.created {
                eprintln!(
                    "(request id seen before: this is the existing job, now {})",
                    submitted.job.status.as_str()
                );
            }
            return Ok(());
        }
        eprintln!(
            "job {id}{}",
            if submitted.created { "" } else { " (existing)" }
        );
        let mut sub: Subscription<JobStreamItem> =
            JobApiClient::subscribe_job(&self.client, id, None)
                .await
                .map_err(rpc_err)?;
        loop {
            match sub.next().await {
                Some(Ok(JobStreamItem::Event(e))) => eprintln!("{}", show_event(&e)),
                Some(Ok(JobStreamItem::Closed { .. })) | None => break,
                Some(Err(e)) => bail!("the event stream broke: {e}"),
            }
        }
        let info = JobApiClient::status(&self.client, id)
            .await
            .map_err(rpc_err)?;
        match info.status {
            JobStatus::Completed => {
                let out = JobApiClient::output(&self.client, id)
                    .await
                    .map_err(rpc_err)?;
                if self.json {
                    return print_json(&out);
                }
                match out.output_base64 {
                    Some(bytes) => println!("{}", String::from_utf8_lossy(&bytes.0)),
                    None => println!(
                        "output is {} bytes: onvm get-blob --id {} --out FILE",
                        out.size, out.output_blob
                    ),
                }
                Ok(())
            }
            other => bail!(
                "job {id} ended {}: {}",
                other.as_str(),
                info.error.unwrap_or_default()
            ),
        }
    }

    pub async fn job_status(&self, id: JobId) -> Result<()> {
        let info = JobApiClient::status(&self.client, id)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&info);
        }
        show_job(&info);
        Ok(())
    }

    pub async fn job_output(&self, id: JobId, out: Option<&Path>) -> Result<()> {
        let output = JobApiClient::output(&self.client, id)
            .await
            .map_err(rpc_err)?;
        if self.json && out.is_none() {
            return print_json(&output);
        }
        let Some(bytes) = output.output_base64 else {
            bail!(
                "output is {} bytes, too large to send inline: onvm get-blob --id {} --out FILE",
                output.size,
                output.output_blob
            );
        };
        match out {
            Some(path) => std::fs::write(path, &bytes.0)
                .with_context(|| format!("writing {}", path.display())),
            None => {
                println!("{}", String::from_utf8_lossy(&bytes.0));
                Ok(())
            }
        }
    }

    pub async fn cancel_job(&self, id: JobId) -> Result<()> {
        let info = JobApiClient::cancel(&self.client, id)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&info);
        }
        println!(
            "{} {}",
            id,
            if info.cancel_requested && info.status == JobStatus::Running {
                "cancelling"
            } else {
                info.status.as_str()
            }
        );
        Ok(())
    }

    pub async fn list_jobs(
        &self,
        filter: JobFilter,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<()> {
        let page = JobApiClient::list(&self.client, Some(filter), cursor, limit)
            .await
            .map_err(rpc_err)?;
        if self.json {
            return print_json(&page);
        }
        for j in &page.items {
            println!(
                "{}  {:<10} attempts {}  {}",
                j.job_id,
                j.status.as_str(),
                j.attempts.len(),
                j.request_id
            );
        }
        if let Some(c) = page.next_cursor {
            eprintln!("more with --cursor {c}");
        }
        Ok(())
    }

    /// What the program logged, attempt by attempt.
    pub async fn job_logs(&self, id: JobId) -> Result<()> {
        let logs = JobApiClient::logs(&self.client, id)
            .await
            .map_err(crate::client::rpc_err_hint(
                "check the id with `onvm list-jobs`; logs are kept by the node that ran the job (its program's home)",
            ))?;
        if self.json {
            return print_json(&logs);
        }
        if logs.attempts.is_empty() {
            eprintln!(
                "job {id} has not run yet: no attempts, no logs (follow it with `onvm watch-jobs`)"
            );
        }
        for a in &logs.attempts {
            println!("--- attempt {} ---", a.attempt);
            for line in &a.lines {
                println!("{line}");
            }
            if a.lines.is_empty() {
                println!("(nothing logged)");
            }
            if a.truncated {
                println!("(log truncated: the node keeps vm.max_log_bytes per call)");
            }
        }
        Ok(())
    }

    /// Follows the job event feed until interrupted or `limit` events were shown; resumes by
    /// itself when closed for lag.
    pub async fn watch_jobs(
        &self,
        filter: JobFilter,
        from_seq: Option<u64>,
        limit: Option<u64>,
    ) -> Result<()> {
        let json = self.json;
        crate::streams::follow_to_stdout(
            from_seq,
            limit,
            |from| JobApiClient::subscribe_feed(&self.client, Some(filter.clone()), from),
            async |_, e: JobEvent| {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!("{}", show_event(&e));
                }
                Ok(())
            },
        )
        .await
    }
}
