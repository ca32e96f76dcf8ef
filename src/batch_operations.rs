//! S3 Batch Operations' `LambdaInvoke`: the event a job sends a Lambda function for its
//! tasks (invocation schemas 1.0 and 2.0) and the answer it expects, each task's result
//! code chosen from what became of its object.
//!
//! `Succeeded` and `PermanentFailure` are final; `TemporaryFailure` makes Batch
//! Operations invoke the function for that task again later, so it is the answer for
//! what may succeed then (throttling, timeouts, service faults that outlasted the
//! retries, a deadline reached): never for what would fail the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::escape;
use crate::pipeline::{Finished, StandingJob};

/// The schema versions this module reads.
const SCHEMAS: [&str; 2] = ["1.0", "2.0"];

/// A task's result string at most (characters): enough for the step, the S3 or KMS
/// action and its error; the completion report holds one per task, millions per job.
const MAX_RESULT_STRING: usize = 1024;

/// Time kept back from an invocation's deadline, at most (a tenth of the time left at
/// the start when that is less): a task still running then is answered
/// `TemporaryFailure`, so the whole answer arrives before Lambda ends the invocation
/// (which would fail every task of it).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// The event a Batch Operations job invokes the function with.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    /// `1.0` or `2.0`.
    pub invocation_schema_version: String,
    /// Copied into the answer.
    pub invocation_id: String,
    /// The job; `userArguments` (2.0) are not read: the function's own flags and
    /// configuration decide what it does.
    #[serde(default)]
    pub job: Option<BatchJob>,
    /// The tasks: one per invocation, as Batch Operations sends them today.
    pub tasks: Vec<Task>,
}

/// The job an invocation belongs to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchJob {
    /// The Batch Operations job ID.
    pub id: String,
    /// Schema 2.0's `UserArguments` of the job.
    #[serde(default)]
    pub user_arguments: Option<BTreeMap<String, String>>,
}

/// One object of the manifest.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Copied into the task's result.
    pub task_id: String,
    /// The object's key (URL-encoded in schema 1.0).
    pub s3_key: String,
    /// Its version, for manifests that name versions.
    #[serde(default)]
    pub s3_version_id: Option<String>,
    /// Schema 2.0: the bucket's name.
    #[serde(default)]
    pub s3_bucket: Option<String>,
    /// Schema 1.0: the bucket's ARN.
    #[serde(default)]
    pub s3_bucket_arn: Option<String>,
}

/// The answer to an invocation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The invocation's schema version.
    pub invocation_schema_version: String,
    /// What a task missing from `results` counts as.
    pub treat_missing_keys_as: ResultCode,
    /// The invocation's ID.
    pub invocation_id: String,
    /// One per task.
    pub results: Vec<TaskResult>,
}

/// What became of one task.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// The task's ID.
    pub task_id: String,
    /// Its outcome.
    pub result_code: ResultCode,
    /// What the completion report shows for it (escaped, at most
    /// [`MAX_RESULT_STRING`] characters).
    pub result_string: String,
}

/// A task's outcome as Batch Operations counts it.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum ResultCode {
    /// Done (or nothing needed doing).
    Succeeded,
    /// May succeed later: Batch Operations invokes the function for it again.
    TemporaryFailure,
    /// Fails the same way however often it is tried.
    PermanentFailure,
}

/// An event this module cannot answer task by task.
#[derive(Debug, thiserror::Error)]
#[error("not an S3 Batch Operations invocation: {0}")]
pub struct NotAnInvocation(String);

impl Invocation {
    /// Reads an invocation from the event's JSON.
    pub fn parse(event: serde_json::Value) -> Result<Self, NotAnInvocation> {
        let invocation: Self =
            serde_json::from_value(event).map_err(|e| NotAnInvocation(e.to_string()))?;
        if !SCHEMAS.contains(&invocation.invocation_schema_version.as_str()) {
            return Err(NotAnInvocation(format!(
                "invocation schema {} (this function reads {})",
                escape::text(&invocation.invocation_schema_version),
                SCHEMAS.join(" and ")
            )));
        }
        Ok(invocation)
    }
}

impl Task {
    /// The task's bucket and key, or why it names no object.
    fn object(&self, schema: &str) -> Result<(String, String), String> {
        let bucket = match (&self.s3_bucket, &self.s3_bucket_arn) {
            (Some(name), _) if !name.is_empty() => name.clone(),
            (_, Some(arn)) => arn
                .strip_prefix("arn:")
                .and_then(|rest| rest.split_once(":s3:::"))
                .map(|(_, name)| name.to_string())
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .ok_or_else(|| format!("s3BucketArn {} is not a bucket ARN", escape::text(arn)))?,
            _ => return Err("the task names no bucket (s3Bucket or s3BucketArn)".into()),
        };
        let key = if schema == "1.0" {
            crate::store::url_decode_key(&self.s3_key).ok_or_else(|| {
                format!(
                    "s3Key {} is not URL-encoded UTF-8 text",
                    escape::text(&self.s3_key)
                )
            })?
        } else {
            self.s3_key.clone()
        };
        if key.is_empty() {
            return Err("the task's s3Key is empty".into());
        }
        Ok((bucket, key))
    }
}

/// Answers `invocation`: each task's object processed by `job` in turn, until
/// `deadline` (less its margin, [`DEADLINE_MARGIN`]); tasks not finished by then are answered
/// `TemporaryFailure`, so Batch Operations hands them out again.
pub async fn answer(
    job: &StandingJob,
    invocation: Invocation,
    deadline: Option<tokio::time::Instant>,
) -> Response {
    let schema = invocation.invocation_schema_version.as_str();
    let cutoff = deadline.map(|d| {
        let left = d.saturating_duration_since(tokio::time::Instant::now());
        d - DEADLINE_MARGIN.min(left / 10)
    });
    let mut results = Vec::with_capacity(invocation.tasks.len());
    for task in &invocation.tasks {
        let (code, message) = match task.object(schema) {
            Err(why) => (ResultCode::PermanentFailure, why),
            Ok((bucket, key)) => {
                let version = task.s3_version_id.as_deref().filter(|v| !v.is_empty());
                let work = job.process(&bucket, &key, version);
                let finished = match cutoff {
                    Some(cutoff) => tokio::time::timeout_at(cutoff, work).await.ok(),
                    None => Some(work.await),
                };
                match finished {
                    Some(finished) => outcome(finished),
                    // The object's unfinished upload is aborted when its next attempt
                    // starts; nothing of it is visible meanwhile.
                    None => (
                        ResultCode::TemporaryFailure,
                        "the invocation's deadline came before the object was done; \
                         Batch Operations retries it"
                            .into(),
                    ),
                }
            }
        };
        results.push(TaskResult {
            task_id: task.task_id.clone(),
            result_code: code,
            result_string: bounded(&message),
        });
    }
    Response {
        invocation_schema_version: invocation.invocation_schema_version.clone(),
        treat_missing_keys_as: ResultCode::PermanentFailure,
        invocation_id: invocation.invocation_id.clone(),
        results,
    }
}

/// The result code and string for what became of an object.
fn outcome(finished: Finished) -> (ResultCode, String) {
    match finished {
        Finished::Succeeded => (ResultCode::Succeeded, "done".into()),
        Finished::Skipped(why) => (ResultCode::Succeeded, format!("skipped: {why}")),
        Finished::WouldProcess => (ResultCode::Succeeded, "dry run: would be processed".into()),
        Finished::Failed {
            code,
            message,
            transient,
        } => {
            let result = if transient {
                ResultCode::TemporaryFailure
            } else {
                ResultCode::PermanentFailure
            };
            (result, format!("{code}: {message}"))
        }
    }
}

/// `message` escaped and cut to [`MAX_RESULT_STRING`] characters.
fn bounded(message: &str) -> String {
    let escaped = escape::text(message);
    if escaped.chars().count() <= MAX_RESULT_STRING {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(MAX_RESULT_STRING - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_schemas_name_their_objects() {
        let v2 = Invocation::parse(json!({
            "invocationSchemaVersion": "2.0",
            "invocationId": "inv",
            "job": {"id": "job-1", "userArguments": {"k": "v"}},
            "tasks": [{"taskId": "t1", "s3Key": "a b/c%2B.txt", "s3VersionId": null,
                       "s3Bucket": "src"}]
        }))
        .unwrap();
        assert_eq!(
            v2.tasks[0].object("2.0").unwrap(),
            ("src".to_string(), "a b/c%2B.txt".to_string())
        );
        let v1 = Invocation::parse(json!({
            "invocationSchemaVersion": "1.0",
            "invocationId": "inv",
            "job": {"id": "job-1"},
            "tasks": [{"taskId": "t1", "s3Key": "a+b/c%2B.txt", "s3VersionId": "3",
                       "s3BucketArn": "arn:aws:s3:::src"}]
        }))
        .unwrap();
        assert_eq!(
            v1.tasks[0].object("1.0").unwrap(),
            ("src".to_string(), "a b/c+.txt".to_string())
        );
    }

    #[test]
    fn malformed_events_and_tasks_are_refused_with_reasons() {
        let wrong_schema = json!({"invocationSchemaVersion": "3.0", "invocationId": "i",
                                  "tasks": []});
        let e = Invocation::parse(wrong_schema).unwrap_err().to_string();
        assert!(e.contains("schema 3.0"), "{e}");
        let not_batch = json!({"Records": []});
        assert!(Invocation::parse(not_batch).is_err());
        let task = |bucket: serde_json::Value, arn: serde_json::Value, key: &str| Task {
            task_id: "t".into(),
            s3_key: key.into(),
            s3_version_id: None,
            s3_bucket: serde_json::from_value(bucket).unwrap(),
            s3_bucket_arn: serde_json::from_value(arn).unwrap(),
        };
        let no_bucket = task(json!(null), json!(null), "k").object("2.0");
        assert!(no_bucket.unwrap_err().contains("names no bucket"));
        let bad_arn = task(json!(null), json!("arn:aws:s3:::b/x"), "k").object("1.0");
        assert!(bad_arn.unwrap_err().contains("not a bucket ARN"));
        let empty_key = task(json!("b"), json!(null), "").object("2.0");
        assert!(empty_key.unwrap_err().contains("empty"));
        let bad_escape = task(json!("b"), json!(null), "%FF").object("1.0");
        assert!(bad_escape.is_err());
    }

    #[test]
    fn only_what_may_succeed_later_is_a_temporary_failure() {
        let failed = |transient| Finished::Failed {
            code: "SlowDown".into(),
            message: "read: S3 GetObject s3://b/k: SlowDown".into(),
            transient,
        };
        assert_eq!(outcome(failed(true)).0, ResultCode::TemporaryFailure);
        assert_eq!(outcome(failed(false)).0, ResultCode::PermanentFailure);
        assert_eq!(outcome(Finished::Succeeded).0, ResultCode::Succeeded);
        let skipped = outcome(Finished::Skipped("already encrypted".into()));
        assert_eq!(
            skipped,
            (ResultCode::Succeeded, "skipped: already encrypted".into())
        );
    }

    #[test]
    fn result_strings_are_escaped_and_bounded() {
        assert_eq!(bounded("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        let long = bounded(&"x".repeat(5000));
        assert_eq!(long.chars().count(), MAX_RESULT_STRING);
        assert!(long.ends_with('…'));
        let answer = serde_json::to_value(TaskResult {
            task_id: "t".into(),
            result_code: ResultCode::TemporaryFailure,
            result_string: "s".into(),
        })
        .unwrap();
        assert_eq!(
            answer,
            json!({"taskId": "t", "resultCode": "TemporaryFailure", "resultString": "s"})
        );
    }
}
