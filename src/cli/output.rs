//! Every byte the binary writes to stdout or stderr goes through here, so two rules hold
//! everywhere at once:
//! - a closed stdout (`sealpipe inspect m | head -1`) ends the program quietly with
//!   exit 0, as ripgrep does, and a closed or full stderr is never fatal: nothing we say
//!   there is worth more than the job's exit code;
//! - no stderr line can carry a raw control character, a line break or a direction
//!   override: each line passes [`sealpipe::escape::text`] as a whole, so text read
//!   from a message, a file name or a server cannot forge an `error:` line or drive the
//!   terminal, whatever the caller forgot to escape.
//!
//! `src/main.rs` denies `print!`/`eprint!` and friends; this module is the one place
//! allowed to touch the standard streams.

use std::fmt;
use std::io::{self, Write};

/// Stdout was closed by the reader (a pipe into `head`, `true`, a closed socket): the
/// program stops producing output and exits 0 without a message.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `e` (or any error it wraps) is [`StdoutClosed`].
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// Writes `text` and a line break to stdout. Stdout carries the program's results
/// (JSON, the benchmark table), which may legitimately span lines, so it is not
/// escaped here: callers escape what they put in it (see [`super::json`]).
pub fn stdout_line(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes one line to stderr, escaped as a whole, ignoring every failure: stderr may be
/// closed (`2>&-`), a broken pipe or a full disk, and none of that changes the outcome.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let line = match args.as_str() {
        Some(s) => s.to_owned(),
        None => args.to_string(),
    };
    let mut line = sealpipe::escape::text(&line).into_owned();
    line.push('\n');
    // One write_all on the locked handle, so lines from different threads (progress,
    // the signal handler, the summary) never interleave mid-line.
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// `eprintln!`, through [`stderr_line`]: escaped, never panics.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr_line(format_args!($($arg)*))
    };
}

pub(crate) use say;

/// Makes sure descriptors 0, 1 and 2 are open before anything else opens a file.
///
/// With stderr closed (`2>&-`) the next `open` would get descriptor 2, and everything
/// written to "stderr" would land in that file: a sealed output, a report, the async
/// runtime's eventfd. `/dev/null` is opened until the descriptor it gets is above 2,
/// and the ones it got below are kept open for the process's life.
#[cfg(unix)]
pub fn reserve_standard_descriptors() {
    use std::os::fd::{AsRawFd, IntoRawFd};
    for _ in 0..3 {
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        if null.as_raw_fd() > 2 {
            return;
        }
        // Deliberately leaked: it now fills a standard descriptor's slot.
        let _ = null.into_raw_fd();
    }
}

/// Nothing to reserve where descriptors are not numbered from 0.
#[cfg(not(unix))]
pub fn reserve_standard_descriptors() {}

/// `e` and its causes on one line, `: `-separated like anyhow's `{:#}`, but each cause
/// once: some errors print their source in their own message and return it as their
/// source too, which would say "Is a directory" twice.
pub fn causes(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
