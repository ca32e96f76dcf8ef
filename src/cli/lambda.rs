//! `--batch-operations`: a job command run as the AWS Lambda function an S3 Batch
//! Operations job invokes for its tasks, through the Lambda Runtime API.
//!
//! The job is planned and its keys loaded once, when the function starts (its init
//! phase): a key that cannot be used stops the function there, before any task is
//! answered. Every warm invocation after that draws on the same data-key pool, so a
//! million tasks cost as many KMS calls as a million-object job on one machine would.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use sealpipe::batch_operations::{self, Invocation, Response};
use sealpipe::pipeline::{Cancel, StandingJob, Stats};

use super::output::say;
use super::settings::{Aws, JobSettings};
use super::{Outcome, build, keyref, log_job_start};

/// What Lambda sets for a function's runtime to find the Runtime API.
const RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// Checks what Lambda sets for a runtime before `lambda_runtime` reads it: that crate
/// panics on a variable missing or malformed, and a panic (exit 101) is never how
/// sealpipe reports bad input.
pub(super) fn check_lambda_environment(
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let Some(api) = env(RUNTIME_API) else {
        bail!(
            "{what} runs as an AWS Lambda function and {RUNTIME_API} is not set: \
             Lambda sets it; to run the function elsewhere, start a Runtime API emulator \
             (`cargo lambda watch --only-lambda-apis`, or the AWS Lambda Runtime Interface \
             Emulator) and set {RUNTIME_API} and the variables it names"
        );
    };
    if api.parse::<http::Uri>().is_err() {
        bail!(
            "{RUNTIME_API} {} is not a host:port or URL of the Runtime API",
            sealpipe::escape::text(&api)
        );
    }
    for name in ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION"] {
        if env(name).is_none() {
            bail!("{name} is not set; Lambda sets it beside {RUNTIME_API}");
        }
    }
    let memory = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
    match env(memory) {
        Some(mib) if mib.parse::<i32>().is_ok() => Ok(()),
        Some(mib) => bail!(
            "{memory} {} is not a number of MiB",
            sealpipe::escape::text(&mib)
        ),
        None => bail!("{memory} is not set; Lambda sets it beside {RUNTIME_API}"),
    }
}

/// Serves invocations until Lambda ends the process (or a signal stops it).
pub async fn serve(
    settings: &JobSettings,
    aws: &Aws,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Outcome> {
    check_lambda_environment("--batch-operations", &|name| std::env::var(name).ok())?;
    let job = build::job(settings, build::parts(settings, aws, kms).await?)?;
    log_job_start(settings, &job);
    let stats = Arc::new(Stats::default());
    stats.label_keys(settings.task.key_refs().to_vec());
    let cancel = Cancel::default();
    let signals = tokio::spawn(super::cancel_on_signal(cancel.clone()));
    let standing = Box::pin(StandingJob::start(job, stats, cancel))
        .await
        .context("the S3 Batch Operations function cannot start")?;
    let standing = &standing;
    let handler = service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        Box::pin(invoked(standing, kms, event)).await
    });
    let served = lambda_runtime::run(handler).await;
    signals.abort();
    match served {
        Ok(()) => Ok(Outcome::Success),
        Err(e) => bail!("the Lambda Runtime API at {RUNTIME_API} failed: {e}"),
    }
}

/// One invocation: its tasks answered, or a function error (`NotAnInvocation`) for an
/// event that is not one.
async fn invoked(
    standing: &StandingJob,
    kms: &keyref::KmsSource,
    event: LambdaEvent<serde_json::Value>,
) -> Result<Response, Diagnostic> {
    let invocation = Invocation::parse(event.payload).map_err(|e| {
        if sealpipe::events::enabled() {
            let mut fields = serde_json::Map::new();
            fields.insert("error".into(), e.to_string().into());
            sealpipe::events::emit("invocation", fields);
        } else {
            say!("error: {e}");
        }
        Diagnostic {
            error_type: "NotAnInvocation".into(),
            error_message: e.to_string(),
        }
    })?;
    let deadline = remaining(event.context.deadline).map(|left| tokio::time::Instant::now() + left);
    let job_id = invocation
        .job
        .as_ref()
        .map(|j| j.id.clone())
        .unwrap_or_default();
    let response = batch_operations::answer(standing, invocation, deadline).await;
    log_invocation(standing, kms, &job_id, &response);
    Ok(response)
}

/// One line per invocation: its tasks' result codes, and the function's totals since it
/// started (objects, KMS calls), which show the data-key pool serving warm invocations.
fn log_invocation(
    standing: &StandingJob,
    kms: &keyref::KmsSource,
    job_id: &str,
    response: &Response,
) {
    use batch_operations::ResultCode;
    let count = |code| {
        let n = response
            .results
            .iter()
            .filter(|r| r.result_code == code)
            .count();
        n as u64
    };
    let [generate_data_key, encrypt, decrypt, ..] = super::kms_counters(kms);
    let stats = standing.stats();
    let fields = serde_json::json!({
        "invocation_id": sealpipe::escape::text(&response.invocation_id),
        "job_id": sealpipe::escape::text(job_id),
        "tasks": response.results.len(),
        "succeeded": count(ResultCode::Succeeded),
        "temporary_failures": count(ResultCode::TemporaryFailure),
        "permanent_failures": count(ResultCode::PermanentFailure),
        "objects_done_since_start": stats.objects_done(),
        "objects_unsuccessful_since_start": stats.objects_unsuccessful(),
        "kms_since_start": {
            "GenerateDataKey": generate_data_key,
            "Encrypt": encrypt,
            "Decrypt": decrypt,
        },
    });
    if sealpipe::events::enabled() {
        if let serde_json::Value::Object(fields) = fields {
            sealpipe::events::emit("invocation", fields);
        }
    } else {
        say!("invocation: {fields}");
    }
}

/// The time left until `deadline_ms` (milliseconds since the Unix epoch, as Lambda's
/// `Lambda-Runtime-Deadline-Ms` gives it); `None` when it says nothing usable: a
/// deadline already past is not one Lambda sends (emulators send a duration there,
/// `cargo lambda` 600000), and cutting every task off at once would fail them all.
fn remaining(deadline_ms: u64) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    std::time::Duration::from_millis(deadline_ms).checked_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_lambda_environment_is_an_error_not_a_panic() {
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            check_lambda_environment("--batch-operations", &move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
            .map_err(|e| e.to_string())
        };
        let good = [
            (RUNTIME_API, "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ];
        assert!(with(&good).is_ok());
        let mut url = good;
        url[0].1 = "http://127.0.0.1:9000/.rt";
        assert!(with(&url).is_ok());
        assert!(with(&good[1..]).unwrap_err().contains("is not set"));
        for (i, bad) in [
            (0, "127.0.0.1:9001/.rt"),
            (0, "a b"),
            (3, "lots"),
            (3, "9e99"),
        ] {
            let mut vars = good;
            vars[i].1 = bad;
            let e = with(&vars).unwrap_err();
            assert!(e.contains(vars[i].0), "{e}");
        }
        for i in 1..4 {
            let vars: Vec<_> = good
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| *v)
                .collect();
            assert!(with(&vars).unwrap_err().contains(good[i].0));
        }
    }
}
