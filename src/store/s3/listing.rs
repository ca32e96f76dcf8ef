//! Listing a prefix as a stream: ListObjectsV2 pages, each object sent on as it
//! arrives.

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use tokio::sync::mpsc;

use super::{
    S3Error, S3Store,
    meta::unquote,
    request::{retried, send},
};
use crate::store::{ListItem, Listed, ObjectId};

/// An entry of a listing one level deep (delimiter `/`), in key order.
#[derive(Debug)]
pub enum LevelEntry {
    /// An object directly at that level.
    Object(ListItem),
    /// A prefix one level down (ending in `/`), standing for everything below it.
    Prefix(String),
}

impl S3Store {
    /// Lists every object below `prefix`, page by page, sending each as it arrives;
    /// `relative` is the key minus the prefix. Folder markers (empty keys ending in `/`)
    /// are skipped. Stops early if the receiver is gone.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        out: &mpsc::Sender<ListItem>,
    ) -> Result<(), S3Error> {
        self.list_under(bucket, prefix, prefix, out).await
    }

    /// Like [`list`](Self::list) for the objects below `within`, named relative to
    /// `root` (a prefix of `within`): a part of a listing rooted higher up.
    pub async fn list_under(
        &self,
        bucket: &str,
        root: &str,
        within: &str,
        out: &mpsc::Sender<ListItem>,
    ) -> Result<(), S3Error> {
        let what = format!("s3://{bucket}/{within}");
        self.pages(bucket, within, None, &what, out, |page| {
            page.contents()
                .iter()
                .filter_map(|o| Some(item(bucket, root, o.key()?, o)))
                .collect()
        })
        .await
    }

    /// Lists one level below `prefix` (delimiter `/`): its objects (named relative to
    /// `root`) and the prefixes one level down, merged into key order page by page.
    pub async fn list_level(
        &self,
        bucket: &str,
        root: &str,
        prefix: &str,
        out: &mpsc::Sender<LevelEntry>,
    ) -> Result<(), S3Error> {
        let what = format!("s3://{bucket}/{prefix} (one level, delimiter /)");
        self.pages(bucket, prefix, Some("/"), &what, out, |page| {
            level_entries(bucket, root, page)
        })
        .await
    }

    /// Sends what `entries` makes of each ListObjectsV2 page of `prefix`, page after
    /// page, until the last page or until the receiver is gone.
    async fn pages<T>(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        what: &str,
        out: &mpsc::Sender<T>,
        entries: impl Fn(&ListObjectsV2Output) -> Vec<T>,
    ) -> Result<(), S3Error> {
        let mut token: Option<String> = None;
        let client = self.shared.client(bucket).await;
        loop {
            let page = retried(&self.shared, || {
                let request = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_delimiter(delimiter.map(str::to_string))
                    .set_continuation_token(token.clone());
                send(request.send(), "ListObjectsV2", &what)
            })
            .await?;
            for entry in entries(&page) {
                if out.send(entry).await.is_err() {
                    return Ok(());
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() || page.is_truncated() != Some(true) {
                return Ok(());
            }
        }
    }
}

/// A page's objects and prefixes merged into key order: each is sorted, and together
/// they cover one key range, so page after page the whole listing comes in order.
fn level_entries(bucket: &str, root: &str, page: &ListObjectsV2Output) -> Vec<LevelEntry> {
    let objects: Vec<(&str, &aws_sdk_s3::types::Object)> = page
        .contents()
        .iter()
        .filter_map(|o| Some((o.key()?, o)))
        .collect();
    let prefixes: Vec<&str> = page
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    let mut entries = Vec::with_capacity(objects.len() + prefixes.len());
    let (mut o, mut p) = (0, 0);
    while o < objects.len() || p < prefixes.len() {
        let object_first = match (objects.get(o), prefixes.get(p)) {
            (Some((key, _)), Some(prefix)) => key < prefix,
            (Some(_), None) => true,
            _ => false,
        };
        if object_first {
            let (key, object) = objects[o];
            entries.push(LevelEntry::Object(item(bucket, root, key, object)));
            o += 1;
        } else {
            entries.push(LevelEntry::Prefix(prefixes[p].to_string()));
            p += 1;
        }
    }
    entries
}

/// A listed object as the job sees it, named relative to `root`.
fn item(bucket: &str, root: &str, key: &str, object: &aws_sdk_s3::types::Object) -> ListItem {
    let size = object.size().and_then(|s| u64::try_from(s).ok());
    let id = ObjectId::s3(bucket, key, None);
    if key.ends_with('/') && size == Some(0) {
        ListItem::Skipped {
            id,
            reason: "folder marker (empty object whose key ends in /)".into(),
        }
    } else {
        ListItem::Object(Listed {
            relative: key.strip_prefix(root).unwrap_or(key).into(),
            size,
            etag: object.e_tag().map(unquote),
            id,
        })
    }
}
