//! Progress on long jobs: a bar on a terminal, a plain line every few seconds otherwise
//! (cron, CI logs). Rendering only reads the job's atomic counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sealpipe::keys::KmsStats;
use sealpipe::pipeline::Stats;

/// A running progress display; stops when dropped.
pub struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts rendering `stats` on stderr, unless `quiet`.
    pub fn start(stats: Arc<Stats>, kms: Option<Arc<KmsStats>>, quiet: bool) -> Self {
        if quiet {
            return Self {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = terminal.then(|| {
                let bar = ProgressBar::new(0);
                // A constant template, so this cannot fail; if it ever did, the default
                // style would still show progress.
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} \
                     ({bytes_per_sec}, eta {eta}) {msg}",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            let started = Instant::now();
            let period = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            loop {
                let done = tokio::select! {
                    _ = &mut rx => true,
                    _ = tokio::time::sleep(period) => false,
                };
                let line = status_line(&stats, kms.as_deref());
                match &bar {
                    Some(bar) => {
                        bar.set_length(stats.bytes_planned.load(Relaxed));
                        bar.set_position(stats.bytes_in.load(Relaxed));
                        bar.set_message(line);
                    }
                    None if !done => {
                        super::output::say!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64())
                    }
                    None => {}
                }
                if done {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    return;
                }
            }
        });
        Self {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops rendering and clears the bar.
    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn status_line(stats: &Stats, kms: Option<&KmsStats>) -> String {
    let kms = kms.map_or_else(String::new, |k| {
        format!(
            ", KMS calls {} ({} throttled, {} retries)",
            k.generate_data_key.load(Relaxed) + k.encrypt.load(Relaxed) + k.decrypt.load(Relaxed),
            k.retry.throttled.load(Relaxed),
            k.retry.retries.load(Relaxed),
        )
    });
    let s3 = stats.s3_stats().map_or_else(String::new, |s| {
        format!(
            ", S3 requests {} ({} retries)",
            s.requests.load(Relaxed),
            s.retry.retries.load(Relaxed)
        )
    });
    // Until listing ends the total is only what has been found so far.
    let planned = stats.objects_planned.load(Relaxed);
    let total = if stats.listing_done.load(Relaxed) {
        planned.to_string()
    } else {
        format!("{planned}+")
    };
    format!(
        "objects {}/{total} ({} failed, {} conflicts, {} skipped), {} MiB in, data keys {}{kms}{s3}",
        stats.objects_done(),
        stats.objects_failed.load(Relaxed),
        stats.objects_conflict.load(Relaxed),
        stats.objects_skipped.load(Relaxed),
        stats.bytes_in.load(Relaxed) >> 20,
        stats.data_keys(),
    )
}
