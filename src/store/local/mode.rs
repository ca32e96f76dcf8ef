//! The permission bits of outputs, and telling whether two paths are one file.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

#[cfg(unix)]
pub(super) fn unix_mode(meta: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
pub(super) fn unix_mode(_: &fs::Metadata) -> Option<u32> {
    None
}

/// Whether two paths name the same existing file (same device and inode): a hard
/// link, a bind mount or another spelling of one path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // `b` (an output) usually does not exist yet: then `a` needs no look.
        let Ok(b) = fs::metadata(b) else {
            return false;
        };
        fs::metadata(a).is_ok_and(|a| a.dev() == b.dev() && a.ino() == b.ino())
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// The permission bits an output file gets: the source's read, write and execute bits
/// (`source_mode`; `None` for S3 sources, which have none, means `rw-rw-rw-`), filtered
/// by the process's umask, as for any file the user creates. Setuid, setgid and sticky
/// bits are never kept, and ownership is the running user's: decrypting a setuid
/// binary's ciphertext as root must not produce a setuid root binary.
pub fn output_mode(source_mode: Option<u32>) -> u32 {
    source_mode.map_or(0o666, |m| m & 0o777) & !umask()
}

/// The process's file-creation mask, read once.
pub(super) fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        // Linux says it; elsewhere, a file created with every bit shows what the mask
        // took away. If neither works, assume the strictest mask rather than none.
        umask_from_proc().or_else(umask_from_probe).unwrap_or(0o077)
    })
}

fn umask_from_proc() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
}

#[cfg(unix)]
fn umask_from_probe() -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let probe = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o777))
        .tempfile()
        .ok()?;
    let mode = probe.as_file().metadata().ok()?.permissions().mode();
    Some(0o777 & !mode)
}

#[cfg(not(unix))]
fn umask_from_probe() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn outputs_keep_only_permission_bits_under_the_umask() {
        let mask = umask();
        assert_eq!(output_mode(Some(0o104755)), 0o755 & !mask);
        assert_eq!(output_mode(Some(0o102750)), 0o750 & !mask);
        assert_eq!(output_mode(Some(0o041777)), 0o777 & !mask);
        assert_eq!(output_mode(None), 0o666 & !mask);
        assert_eq!(output_mode(Some(0o100600)), 0o600 & !mask);
        assert_eq!(umask_from_probe(), Some(mask));
    }
}
