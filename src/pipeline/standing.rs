//! A job that stays up between batches of objects handed to it from outside, as S3
//! Batch Operations invokes a Lambda function with its tasks: planned and keyed once,
//! so a warm process serves every later batch from the same data-key pool and decrypt
//! cache, and KMS calls still scale with data keys, not with invocations.

use std::sync::Arc;

use super::object::{self, Finished};
use super::presence::Presence;
use super::{Context, Job, Source, Stats, plan, start};
use crate::Error;
use crate::bridge::Cancel;
use crate::store::{Listed, ObjectId};

/// A started job whose objects come one at a time ([`Source::Tasks`]).
pub struct StandingJob {
    ctx: Arc<Context>,
}

impl StandingJob {
    /// Plans `job` and loads its keys (the first data key is fetched now, so unusable
    /// keys fail here, before any task). `job.source` must be [`Source::Tasks`].
    pub async fn start(job: Job, stats: Arc<Stats>, cancel: Cancel) -> Result<Self, Error> {
        if job.source != Source::Tasks {
            return Err(Error::Internal(
                "a standing job takes its objects one at a time".into(),
            ));
        }
        if job.shard.is_some() {
            return Err(Error::Config(
                "S3 Batch Operations hands each task to one invocation; a shard would drop \
                 most of them"
                    .into(),
            ));
        }
        if let Some(sealing) = job.work.sealing() {
            sealing.options.validate()?;
        }
        let plan = plan::Plan::new(&job).await?;
        if let Some(s3) = &job.s3 {
            stats.attach_s3(s3.stats().clone(), s3.budget().clone());
        }
        let (running, key_stats) = start(&job).await?;
        stats.attach_key_stats(key_stats);
        Ok(Self {
            ctx: Arc::new(Context {
                job,
                plan,
                running,
                stats,
                cancel,
            }),
        })
    }

    /// Processes the S3 object `bucket/key` (at `version`, when given) as a manifest
    /// entry naming it would be: the same output name, resume check, conditional
    /// write and statistics.
    pub async fn process(&self, bucket: &str, key: &str, version: Option<&str>) -> Finished {
        let ctx = &self.ctx;
        let listed = Listed {
            relative: key.into(),
            id: ObjectId::s3(bucket, key, version.map(str::to_string)),
            size: None,
            etag: None,
        };
        ctx.stats.plan(None);
        if !ctx.job.filter.accepts(listed.relative.as_path()) {
            let reason = "not selected by --include/--exclude";
            ctx.stats.skip(&listed.id, reason);
            return Finished::Skipped(reason.into());
        }
        object::process(ctx, listed, Presence::Unknown).await
    }

    /// The statistics every batch so far added to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.ctx.stats
    }

    /// Whether the job was told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.ctx.cancel.is_cancelled()
    }

    /// Waits for data keys still being fetched ahead (before the process ends).
    pub async fn settle(&self) {
        self.ctx.running.settle().await;
    }
}
