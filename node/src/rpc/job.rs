//! `job_*`: durable jobs: submit (to the program's sequencer), follow, cancel, list.

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::JobId;
use onvm_rpc_api::api::JobApiServer;
use onvm_rpc_api::jobs::{
    JobEvent, JobFilter, JobInfo, JobLogs, JobOutput, JobPage, JobStreamItem, SubmitJob,
    SubmitResult,
};

use super::Handlers;
use super::errors::rpc;
use super::routing::unexpected;
use super::streams::{Close, JobFeed, Step, follow};
use crate::blobs::BlobError;
use crate::jobs::JobError;
use crate::net::{ForwardedCall, ForwardedReply};

#[async_trait]
impl JobApiServer for Handlers {
    async fn submit(
        &self,
        ext: &jsonrpsee::Extensions,
        request: SubmitJob,
    ) -> RpcResult<SubmitResult> {
        let submitted = if let Some(home) = self.elsewhere(request.program_id).await? {
            self.submit_with_failover(home, request).await?
        } else {
            self.ctx.jobs.submit(request).await.map_err(rpc)?
        };
        // Who may cancel it: the client that submitted it here (or the operator).
        if submitted.created
            && let Some(grant) = ext.get::<super::auth::Grant>()
        {
            let (store, key, owner) = (
                self.ctx.store.clone(),
                format!("job:{}", submitted.job.job_id),
                super::auth::owner(grant),
            );
            super::errors::blocking(move || store.set_owner(&key, &owner)).await?;
        }
        Ok(submitted)
    }

    async fn status(&self, job_id: JobId) -> RpcResult<JobInfo> {
        self.ctx.jobs.status(job_id).await.map_err(rpc)
    }

    async fn output(&self, job_id: JobId) -> RpcResult<JobOutput> {
        match self.ctx.jobs.output(job_id).await {
            // A replicated job's output lives on its home (or any node that read it): fetch it.
            Err(JobError::Blob(BlobError::NotFound(blob))) => {
                let blobs = self.ctx.blobs.clone();
                self.ctx
                    .with_blob(blob, || blobs.stat(blob))
                    .await
                    .map_err(rpc)?;
                self.ctx.jobs.output(job_id).await.map_err(rpc)
            }
            other => other.map_err(rpc),
        }
    }

    async fn cancel(&self, ext: &jsonrpsee::Extensions, job_id: JobId) -> RpcResult<JobInfo> {
        self.own(ext, format!("job:{job_id}"), "job").await?;
        if let Ok(job) = self.ctx.jobs.status(job_id).await
            && let Some(home) = self.elsewhere(job.program_id).await?
        {
            return match self
                .forward(home, &ForwardedCall::CancelJob { job_id })
                .await?
            {
                ForwardedReply::Cancelled { job } => Ok(*job),
                other => Err(unexpected(other)),
            };
        }
        self.ctx.jobs.cancel(job_id).await.map_err(rpc)
    }

    async fn list(
        &self,
        filter: Option<JobFilter>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> RpcResult<JobPage> {
        self.ctx
            .jobs
            .list(filter.unwrap_or_default(), cursor, limit)
            .await
            .map_err(rpc)
    }

    async fn logs(&self, job_id: JobId) -> RpcResult<JobLogs> {
        self.ctx.jobs.logs(job_id).await.map_err(rpc)
    }

    async fn subscribe_job(
        &self,
        pending: PendingSubscriptionSink,
        job_id: JobId,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        if let Err(e) = self.ctx.jobs.status(job_id).await {
            pending.reject(rpc(e)).await;
            return Ok(());
        }
        let feed = JobFeed::new(self.ctx.jobs.clone(), Some(job_id));
        let sink = pending.accept().await?;
        let pick = |_, event: JobEvent| {
            if event.status.is_terminal() {
                Step::SendThenFinish(JobStreamItem::Event(event))
            } else {
                Step::Send(JobStreamItem::Event(event))
            }
        };
        follow(
            sink,
            feed,
            from_seq.unwrap_or(0),
            self.lag(),
            pick,
            job_close(),
            self.ctx.counters.clone(),
        )
        .await;
        Ok(())
    }

    async fn subscribe_feed(
        &self,
        pending: PendingSubscriptionSink,
        filter: Option<JobFilter>,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        let from = match from_seq {
            Some(s) => s,
            None => match self.ctx.jobs.last_seq().await {
                Ok(last) => last + 1,
                Err(e) => {
                    pending.reject(rpc(e)).await;
                    return Ok(());
                }
            },
        };
        let feed = JobFeed::new(self.ctx.jobs.clone(), None);
        let sink = pending.accept().await?;
        let filter = filter.unwrap_or_default();
        let pick = move |_, event: JobEvent| {
            if filter.status.is_none_or(|s| s == event.status)
                && filter.program_id.is_none_or(|p| p == event.program_id)
            {
                Step::Send(JobStreamItem::Event(event))
            } else {
                Step::Skip
            }
        };
        follow(
            sink,
            feed,
            from,
            self.lag(),
            pick,
            job_close(),
            self.ctx.counters.clone(),
        )
        .await;
        Ok(())
    }
}

fn job_close() -> Close<JobStreamItem> {
    Close {
        lagged: |seq| JobStreamItem::Closed {
            reason: "lagged".into(),
            resume_from_seq: seq,
        },
        finished: |seq| JobStreamItem::Closed {
            reason: "finished".into(),
            resume_from_seq: seq,
        },
    }
}
