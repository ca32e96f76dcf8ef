//! Before a job starts: what the source is (one object, a tree, a prefix, a manifest),
//! whether source and destination make sense together, and where each object's output
//! goes.

use std::path::{Component, Path, PathBuf};

use super::{Job, Keys, Source, Work};
use crate::Error;
use crate::escape;
use crate::format::RESERVED_PREFIX;
use crate::store::{self, ListItem, Listed, Location, ObjectId, SourceShape};

/// What the source turned out to be.
#[derive(Debug)]
pub(super) enum Shape {
    /// One file or object: the destination may name the output itself.
    Single(Listed),
    /// A local directory tree.
    Tree,
    /// Every S3 object below this prefix.
    Prefix(String),
    /// The objects a manifest names.
    Manifest,
}

/// Where one object's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// Nowhere (`verify`, dry runs of it).
    Discard,
    /// A local file.
    Local(PathBuf),
    /// An S3 object.
    S3 { bucket: String, key: String },
}

impl Target {
    pub(super) fn id(&self) -> Option<ObjectId> {
        match self {
            Target::Discard => None,
            Target::Local(p) => Some(ObjectId::Local(p.clone())),
            Target::S3 { bucket, key } => Some(ObjectId::s3(bucket, key, None)),
        }
    }
}

pub(super) struct Plan {
    pub(super) shape: Shape,
}

impl Plan {
    pub(super) async fn new(job: &Job) -> Result<Self, Error> {
        check_combination(job)?;
        let shape = match &job.source {
            Source::Manifest(_) | Source::Tasks => Shape::Manifest,
            Source::Location(Location::Local(path)) => {
                let meta = std::fs::symlink_metadata(path).map_err(|e| {
                    Error::Config(format!(
                        "source {} is not readable: {e}",
                        escape::path(path)
                    ))
                })?;
                if meta.is_dir() {
                    // A tree whose root cannot be read has nothing to process: that is
                    // a usage error, not a job whose every object failed.
                    std::fs::read_dir(path).map_err(|e| {
                        Error::Config(format!(
                            "source directory {} cannot be read: {e}",
                            escape::path(path)
                        ))
                    })?;
                    Shape::Tree
                } else {
                    let mut single = None;
                    store::list_local(path, |item| {
                        single = Some(item);
                        std::ops::ControlFlow::Break(())
                    })
                    .map_err(|e| Error::Config(e.to_string()))?;
                    match single {
                        Some(ListItem::Object(listed)) => Shape::Single(listed),
                        Some(
                            ListItem::Skipped { reason, .. }
                            | ListItem::Invalid { error: reason, .. },
                        ) => {
                            return Err(Error::Config(format!(
                                "source {}: {reason}",
                                escape::path(path)
                            )));
                        }
                        None => Shape::Tree,
                    }
                }
            }
            Source::Location(Location::S3 { bucket, prefix }) => {
                let s3 = job.s3.as_ref().ok_or_else(|| {
                    Error::Config("an S3 location needs an S3 store in the job".into())
                })?;
                match s3.resolve_source(bucket, prefix).await.map_err(|e| {
                    Error::Config(format!("cannot read source s3://{bucket}/{prefix}: {e}"))
                })? {
                    SourceShape::Single(listed) => Shape::Single(listed),
                    SourceShape::Prefix(p) => Shape::Prefix(p),
                }
            }
        };
        // Many objects need a directory to go in; finding out per object would fail
        // every one of them.
        if let (Shape::Tree | Shape::Prefix(_) | Shape::Manifest, Some(Location::Local(dst))) =
            (&shape, job.destination())
            && std::fs::metadata(dst).is_ok_and(|m| !m.is_dir())
        {
            return Err(Error::Config(format!(
                "destination {} exists and is not a directory; the outputs of many objects \
                 go into a directory",
                escape::path(dst)
            )));
        }
        let plan = Self { shape };
        plan.check_sources_are_not_destinations(job)?;
        Ok(plan)
    }

    /// Refuses every layout in which an output could be written over a source, before
    /// anything is listed or touched; only `--in-place` replaces sources. Paths are
    /// compared resolved (symbolic links and `..` of what exists, then the rest
    /// lexically, as the OS will resolve it once missing directories are created).
    /// Per-object checks in `object.rs` catch what cannot be known here (manifests,
    /// hard links).
    fn check_sources_are_not_destinations(&self, job: &Job) -> Result<(), Error> {
        if job.in_place() {
            return Ok(());
        }
        match (&job.source, &self.shape, job.destination()) {
            (Source::Location(Location::Local(src)), Shape::Single(listed), Some(_)) => {
                if let Target::Local(out) = self.target(job, listed).map_err(Error::Config)? {
                    let (src_real, out_real) = (resolve(src)?, resolve(&out)?);
                    if src_real == out_real || store::same_file(src, &out) {
                        return Err(Error::Config(format!(
                            "the output {} would replace the source itself ({}); write to \
                             another path",
                            escape::path(&out),
                            escape::path(src)
                        )));
                    }
                }
            }
            (Source::Location(Location::Local(src)), Shape::Tree, Some(Location::Local(dst))) => {
                let (src_real, dst_real) = (resolve(src)?, resolve(dst)?);
                let why = if dst_real == src_real {
                    Some("is the source itself")
                } else if dst_real.starts_with(&src_real) {
                    Some("is inside the source directory (a re-run would also read the outputs)")
                } else if src_real.starts_with(&dst_real) {
                    Some("contains the source directory (outputs would land among the sources)")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(Error::Config(format!(
                        "destination {} {why}; write to a directory outside {}",
                        escape::path(dst),
                        escape::path(src)
                    )));
                }
            }
            (
                Source::Location(Location::S3 { bucket: sb, .. }),
                Shape::Single(listed),
                Some(Location::S3 { bucket: db, .. }),
            ) if sb == db => {
                if let (
                    Target::S3 { key, .. },
                    ObjectId::S3 {
                        key: source_key, ..
                    },
                ) = (self.target(job, listed).map_err(Error::Config)?, &listed.id)
                    && &key == source_key
                {
                    return Err(Error::Config(format!(
                        "the output {} would replace the source object itself; pass \
                         --in-place to replace it (with a conditional write), or write \
                         elsewhere",
                        listed.id
                    )));
                }
            }
            (
                Source::Location(Location::S3 { bucket: sb, .. }),
                Shape::Prefix(source_prefix),
                Some(Location::S3 {
                    bucket: db,
                    prefix: dp,
                }),
            ) if sb == db => {
                let (src, dst) = (
                    ObjectId::s3(sb, source_prefix, None),
                    ObjectId::s3(db, dp, None),
                );
                if dp.starts_with(source_prefix.as_str()) {
                    return Err(Error::Config(format!(
                        "destination {dst} is inside the source {src}: outputs could replace \
                         sources and the listing would pick them up; write elsewhere, or \
                         use --in-place"
                    )));
                }
                if source_prefix.starts_with(dp.as_str()) {
                    return Err(Error::Config(format!(
                        "destination {dst} contains the source {src}: outputs could replace \
                         sources; write elsewhere, or use --in-place"
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Where partial outputs of killed runs may lie for this job: the local destination
    /// tree (recursively), or the directory of a single output file (only that
    /// directory). `None` when nothing is written locally.
    pub(super) fn partial_cleanup_root(&self, job: &Job) -> Option<(PathBuf, bool)> {
        let Some(Location::Local(dst)) = job.destination() else {
            return None;
        };
        if let Shape::Single(listed) = &self.shape
            && let Ok(Target::Local(out)) = self.target(job, listed)
        {
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return Some((parent.to_path_buf(), false));
        }
        Some((dst.clone(), true))
    }

    /// Where `listed`'s output goes.
    pub(super) fn target(&self, job: &Job, listed: &Listed) -> Result<Target, String> {
        if job.in_place() {
            return match &listed.id {
                ObjectId::S3 { bucket, key, .. } => Ok(Target::S3 {
                    bucket: bucket.clone(),
                    key: key.clone(),
                }),
                ObjectId::Local(_) => Err("in-place jobs need S3 objects".into()),
            };
        }
        let single = matches!(self.shape, Shape::Single(_));
        match job.destination() {
            None => Ok(Target::Discard),
            Some(Location::Local(dst)) => {
                let names_output = single
                    && !dst.is_dir()
                    && !dst
                        .as_os_str()
                        .to_string_lossy()
                        .ends_with(std::path::MAIN_SEPARATOR);
                if names_output {
                    return Ok(Target::Local(dst.clone()));
                }
                let relative = store::safe_relative_path(&listed.relative).ok_or_else(|| {
                    format!(
                        "the name {} cannot be a path below {} (empty, absolute or `..` \
                         parts); not written",
                        listed.relative,
                        escape::path(dst)
                    )
                })?;
                Ok(Target::Local(dst.join(relative)))
            }
            Some(Location::S3 { bucket, prefix }) => {
                let relative = listed.relative.to_str().ok_or_else(|| {
                    format!(
                        "the name {} is not valid UTF-8, and S3 keys are; it cannot be \
                         written to S3 (rename it, or write to a local destination)",
                        listed.relative
                    )
                })?;
                let key = if single && !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.clone()
                } else if prefix.is_empty() || prefix.ends_with('/') {
                    format!("{prefix}{relative}")
                } else {
                    format!("{prefix}/{relative}")
                };
                Ok(Target::S3 {
                    bucket: bucket.clone(),
                    key,
                })
            }
        }
    }
}

/// Why a job that writes messages cannot run.
pub(super) const NO_WRAPPING_KEY: &str = "encrypting needs at least one wrapping key";
/// Why a job that reads messages cannot run.
pub(super) const NO_UNWRAPPING_KEY: &str = "decrypting needs at least one key to unwrap data keys";

/// Refuses combinations that cannot work, before anything is listed.
fn check_combination(job: &Job) -> Result<(), Error> {
    let source_on_s3 = match &job.source {
        Source::Location(l) => l.is_s3(),
        Source::Manifest(_) | Source::Tasks => true,
    };
    if job.s3.is_none() && (source_on_s3 || job.destination().is_some_and(Location::is_s3)) {
        return Err(Error::Config(
            "an S3 location needs an S3 store in the job".into(),
        ));
    }
    // A dry run uses no key, so it needs none: its keys may be unreadable here.
    let sealing = job.work.sealing();
    let opening = job.work.opening();
    if !job.dry_run {
        if sealing.is_some_and(|s| matches!(s.keys, Keys::NotLoaded)) {
            return Err(Error::Config(NO_WRAPPING_KEY.into()));
        }
        if opening.is_some_and(|o| matches!(o.keys, Keys::NotLoaded)) {
            return Err(Error::Config(NO_UNWRAPPING_KEY.into()));
        }
        if let Work::Rewrap { to, .. } = &job.work
            && matches!(to.new_keys, Some(Keys::NotLoaded))
        {
            return Err(Error::Config(NO_WRAPPING_KEY.into()));
        }
    }
    if let Work::Rewrap { to, .. } = &job.work
        && to.new_keys.is_none()
        && to.keep.drop.is_empty()
    {
        return Err(Error::Config(
            "a rewrap needs new keys to wrap with, or keys to drop".into(),
        ));
    }
    // The format reserves `aws-crypto-` keys: no job may write them into messages or
    // require them of messages, dry runs included (they never reach a keyring, which
    // would refuse the first).
    let contexts = [
        sealing.map(|s| (&s.context, "encryption context")),
        opening.map(|o| (&o.reproduced_context, "reproduced context")),
    ];
    for (context, what) in contexts.into_iter().flatten() {
        if let Some(key) = context.reserved_key() {
            return Err(Error::Config(format!(
                "the {what} key {key:?} uses the prefix {RESERVED_PREFIX}, which is reserved \
                 for the format"
            )));
        }
    }
    if job.in_place() {
        if !source_on_s3 {
            return Err(Error::Config(
                "--in-place works on S3 objects only (conditional writes protect concurrent \
                 writers); for local files write to another directory"
                    .into(),
            ));
        }
        return Ok(());
    }
    if let (Source::Location(src), Some(dst)) = (&job.source, job.destination())
        && src.is_s3()
        && src == dst
    {
        return Err(Error::Config(format!(
            "destination {dst} is the source itself; pass --in-place to replace each object \
             (with conditional writes), or write elsewhere"
        )));
    }
    Ok(())
}

/// `path` made absolute and resolved: what exists is canonicalized (symbolic links
/// followed), the rest is taken lexically, `..` included, as the OS will resolve it once
/// the missing directories are created (they are created as real directories).
fn resolve(path: &Path) -> Result<PathBuf, Error> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::Config(format!("cannot read the working directory: {e}")))?
            .join(path)
    };
    let mut out = PathBuf::new();
    let mut exists = true;
    for part in absolute.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if exists {
                    match out.canonicalize() {
                        Ok(real) => out = real,
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_follows_what_exists_then_the_rest_lexically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        let r = |p: &str| resolve(&root.join(p)).unwrap();
        assert_eq!(r("missing/../src"), root.join("src"));
        assert_eq!(r("src/./sub/.."), root.join("src"));
        assert_eq!(r("a/b/../../src/x"), root.join("src/x"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("src/sub"), root.join("link")).unwrap();
            assert_eq!(r("link/f"), root.join("src/sub/f"));
            // `..` after a symbolic link is the target's parent, as for the kernel.
            assert_eq!(r("link/../x"), root.join("src/x"));
        }
    }
}
