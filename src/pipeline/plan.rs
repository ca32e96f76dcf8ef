//! Before a job starts: what the source is (one object, a tree, a prefix, a manifest),
//! whether source and destination make sense together, and where each object's output
//! goes.

use std::path::{Path, PathBuf};

use super::{Job, Mode, Source};
use crate::Error;
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
            Source::Manifest(_) => Shape::Manifest,
            Source::Location(Location::Local(path)) => {
                let meta = std::fs::symlink_metadata(path).map_err(|e| {
                    Error::Config(format!("source {} is not readable: {e}", path.display()))
                })?;
                if meta.is_dir() {
                    Shape::Tree
                } else {
                    let mut single = None;
                    store::list_local(path, |item| {
                        single = Some(item);
                        std::ops::ControlFlow::Break(())
                    })
                    .map_err(|e| Error::Config(format!("source {}: {e}", path.display())))?;
                    match single {
                        Some(ListItem::Object(listed)) => Shape::Single(listed),
                        Some(
                            ListItem::Skipped { reason, .. }
                            | ListItem::Invalid { error: reason, .. },
                        ) => {
                            return Err(Error::Config(format!(
                                "source {}: {reason}",
                                path.display()
                            )));
                        }
                        None => Shape::Tree,
                    }
                }
            }
            Source::Location(Location::S3 { bucket, prefix }) => {
                let s3 = job.s3.as_ref().expect("S3 jobs have a store");
                match s3.resolve_source(bucket, prefix).await.map_err(|e| {
                    Error::Config(format!("cannot read source s3://{bucket}/{prefix}: {e}"))
                })? {
                    SourceShape::Single(listed) => Shape::Single(listed),
                    SourceShape::Prefix(p) => Shape::Prefix(p),
                }
            }
        };
        if let (Source::Location(Location::Local(src)), Some(Location::Local(dst))) =
            (&job.source, &job.destination)
        {
            check_local_paths(src, dst)?;
        }
        if let (
            Source::Location(Location::S3 { bucket: sb, .. }),
            Shape::Prefix(source_prefix),
            Some(Location::S3 {
                bucket: db,
                prefix: dp,
            }),
        ) = (&job.source, &shape, &job.destination)
            && sb == db
            && !job.in_place
            && dp.starts_with(source_prefix.as_str())
        {
            return Err(Error::Config(format!(
                "destination s3://{db}/{dp} is inside the source s3://{sb}/{source_prefix}: \
                 the listing would pick up the outputs; write elsewhere, or use --in-place"
            )));
        }
        Ok(Self { shape })
    }

    /// Where `listed`'s output goes.
    pub(super) fn target(&self, job: &Job, listed: &Listed) -> Result<Target, String> {
        if job.in_place {
            return match &listed.id {
                ObjectId::S3 { bucket, key, .. } => Ok(Target::S3 {
                    bucket: bucket.clone(),
                    key: key.clone(),
                }),
                ObjectId::Local(_) => Err("in-place jobs need S3 objects".into()),
            };
        }
        let single = matches!(self.shape, Shape::Single(_));
        match &job.destination {
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
                        "the name {:?} cannot be a path below {} (empty, absolute or `..` \
                         parts); not written",
                        listed.relative,
                        dst.display()
                    )
                })?;
                Ok(Target::Local(dst.join(relative)))
            }
            Some(Location::S3 { bucket, prefix }) => {
                let key = if single && !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.clone()
                } else if prefix.is_empty() || prefix.ends_with('/') {
                    format!("{prefix}{}", listed.relative)
                } else {
                    format!("{prefix}/{}", listed.relative)
                };
                Ok(Target::S3 {
                    bucket: bucket.clone(),
                    key,
                })
            }
        }
    }
}

/// Refuses combinations that cannot work, before anything is listed.
fn check_combination(job: &Job) -> Result<(), Error> {
    let source_on_s3 = match &job.source {
        Source::Location(l) => l.is_s3(),
        Source::Manifest(_) => true,
    };
    if job.s3.is_none() && (source_on_s3 || job.destination.as_ref().is_some_and(Location::is_s3)) {
        return Err(Error::Config(
            "an S3 location needs an S3 store in the job".into(),
        ));
    }
    // A dry run uses no key, so it needs none: its keys may be unreadable here.
    if job.mode.writes_messages() && job.wrap_keyring.is_none() && !job.dry_run {
        return Err(Error::Config(
            "encrypting needs at least one wrapping key".into(),
        ));
    }
    if job.mode.reads_messages() && job.unwrap_keyring.is_none() && !job.dry_run {
        return Err(Error::Config(
            "decrypting needs at least one key to unwrap data keys".into(),
        ));
    }
    if job.in_place {
        if !source_on_s3 {
            return Err(Error::Config(
                "--in-place works on S3 objects only (conditional writes protect concurrent \
                 writers); for local files write to another directory"
                    .into(),
            ));
        }
        if job.mode == Mode::Verify {
            return Err(Error::Config(
                "verify writes nothing; drop --in-place".into(),
            ));
        }
        if let (Source::Location(src), Some(dst)) = (&job.source, &job.destination)
            && src != dst
        {
            return Err(Error::Config(format!(
                "--in-place replaces each source object; the destination {dst} differs from \
                 the source {src}"
            )));
        }
        return Ok(());
    }
    match (&job.destination, job.mode) {
        (None, Mode::Verify) | (Some(_), Mode::Encrypt | Mode::Decrypt | Mode::Reencrypt) => {}
        (None, _) => {
            return Err(Error::Config(
                "no destination: give one, or --in-place to replace S3 objects".into(),
            ));
        }
        (Some(_), Mode::Verify) => {
            return Err(Error::Config("verify takes no destination".into()));
        }
    }
    if let (Source::Location(src), Some(dst)) = (&job.source, &job.destination)
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

/// Refuses local layouts that would read our own output or overwrite the input.
fn check_local_paths(source: &Path, destination: &Path) -> Result<(), Error> {
    let src = source
        .canonicalize()
        .map_err(|e| Error::Config(format!("source {} is not readable: {e}", source.display())))?;
    // The destination may not exist yet: resolve its nearest existing ancestor.
    let mut dst = destination.to_path_buf();
    let mut tail = Vec::new();
    while !dst.exists() {
        match (dst.parent(), dst.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_owned());
                dst = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => break,
        }
    }
    let mut dst = dst.canonicalize().unwrap_or(dst);
    dst.extend(tail.iter().rev());
    if dst == src {
        return Err(Error::Config(format!(
            "destination {} is the source itself; write to another path",
            destination.display()
        )));
    }
    if src.is_dir() && dst.starts_with(&src) {
        return Err(Error::Config(format!(
            "destination {} is inside the source directory {}; a re-run would process the outputs",
            destination.display(),
            source.display()
        )));
    }
    Ok(())
}
