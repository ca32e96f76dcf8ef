//! Removing objects: DeleteObjects, up to 1,000 keys a request. Only the benchmark
//! removes objects (the ones it made); jobs never delete anything.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{
    S3Error, S3Store,
    request::{retried, send},
};
use crate::store::ObjectId;

/// S3's limit of keys per DeleteObjects request.
const KEYS_PER_REQUEST: usize = 1000;

impl S3Store {
    /// Deletes `keys` of `bucket` (keys that do not exist count as deleted). Fails on
    /// the first request S3 refuses, or on the first key it could not delete.
    pub async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<(), S3Error> {
        let client = self.shared.client(bucket).await;
        for batch in keys.chunks(KEYS_PER_REQUEST) {
            let what = ObjectId::s3(bucket, &batch[0], None);
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    S3Error::new("DeleteObjects", &what, "InvalidRequest", e.to_string())
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| {
                    S3Error::new("DeleteObjects", &what, "InvalidRequest", e.to_string())
                })?;
            let answer = retried(&self.shared, || {
                let request = client
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete.clone());
                send(request.send(), "DeleteObjects", &what)
            })
            .await?;
            if let Some(failed) = answer.errors().first() {
                let id = ObjectId::s3(bucket, failed.key().unwrap_or_default(), None);
                return Err(S3Error::new(
                    "DeleteObjects",
                    &id,
                    failed.code().unwrap_or("Unknown"),
                    failed.message().unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(())
    }
}
