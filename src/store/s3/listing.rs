//! Listing a prefix as a stream: ListObjectsV2 pages, each object sent on as it
//! arrives.

use tokio::sync::mpsc;

use super::{
    S3Error, S3Store,
    meta::unquote,
    request::{retried, send},
};
use crate::store::{ListItem, Listed, ObjectId};

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
        let what = format!("s3://{bucket}/{prefix}");
        let mut token: Option<String> = None;
        let client = self.shared.client(bucket).await;
        loop {
            let page = retried(&self.shared, || {
                let request = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_continuation_token(token.clone());
                let what = &what;
                send(request.send(), "ListObjectsV2", what)
            })
            .await?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let size = object.size().and_then(|s| u64::try_from(s).ok());
                let id = ObjectId::s3(bucket, key, None);
                let item = if key.ends_with('/') && size == Some(0) {
                    ListItem::Skipped {
                        id,
                        reason: "folder marker (empty object whose key ends in /)".into(),
                    }
                } else {
                    ListItem::Object(Listed {
                        relative: key.strip_prefix(prefix).unwrap_or(key).into(),
                        size,
                        etag: object.e_tag().map(unquote),
                        id,
                    })
                };
                if out.send(item).await.is_err() {
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
