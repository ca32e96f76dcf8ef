//! Which outputs do not exist yet, from a listing of the destination read alongside
//! the source's: a job that resumes asks S3 whether each output is finished work (a
//! HEAD, for its marker), and for an output that is not there at all the listing has
//! already answered, so that request is saved. On a first run into an empty prefix this
//! is one request fewer per object, for one ListObjectsV2 per thousand.
//!
//! The destination is listed in key order, as S3 lists, and only as far as the
//! outputs asked about: a cursor moves forward through it while the source's outputs
//! come in ascending order (an S3 source listing does). Asked about a key below one
//! it was asked about before (a local tree walked in another order, a manifest), the
//! cursor stops answering; so does a listing that fails (no `s3:ListBucket` on the
//! destination, say). Then every object falls back to the HEAD, as before: the listing
//! only ever saves requests, never decides that work is done.

use tokio::sync::mpsc;

use crate::store::{ListItem, ObjectId, S3Store};

/// What the destination listing says about an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Presence {
    /// Not in the destination when it was listed: no earlier run finished it.
    Absent,
    /// In the listing, or not known: ask S3 (the HEAD decides).
    Unknown,
}

/// One entry of the destination listing, as the cursor reads it.
enum Entry {
    Key(String),
    /// The listing ended without an error: every key past the last one is absent.
    End,
}

/// A forward-only cursor over a destination prefix's listing.
pub(super) struct DestinationCursor {
    listing: Option<mpsc::Receiver<Entry>>,
    /// The smallest listed key not yet passed; `None` before the first is read.
    current: Option<String>,
    /// Whether the listing ended cleanly after `current`.
    ended: bool,
    /// The last key asked about, to notice keys that do not come in order.
    last_asked: Option<String>,
}

impl DestinationCursor {
    /// Starts listing `bucket/prefix` in the background, a page or so ahead of what
    /// is asked (the channel is bounded).
    pub(super) fn start(s3: &S3Store, bucket: &str, prefix: &str) -> Self {
        let (out, listing) = mpsc::channel(1024);
        let (s3, bucket, prefix) = (s3.clone(), bucket.to_string(), prefix.to_string());
        tokio::spawn(async move {
            let (items_tx, mut items) = mpsc::channel(1024);
            let list = async move { s3.list(&bucket, &prefix, &items_tx).await };
            let forward = {
                let out = out.clone();
                async move {
                    while let Some(item) = items.recv().await {
                        let id = match item {
                            ListItem::Object(listed) => listed.id,
                            // A folder marker is a key like any other.
                            ListItem::Skipped { id, .. } | ListItem::Invalid { id, .. } => id,
                        };
                        if let ObjectId::S3 { key, .. } = id
                            && out.send(Entry::Key(key)).await.is_err()
                        {
                            return;
                        }
                    }
                }
            };
            let (listed, ()) = tokio::join!(list, forward);
            if listed.is_ok() {
                let _ = out.send(Entry::End).await;
            }
        });
        Self {
            listing: Some(listing),
            current: None,
            ended: false,
            last_asked: None,
        }
    }

    /// Whether the output `key` was absent from the destination; moves the cursor to
    /// it. Keys must come in ascending order for an answer other than `Unknown`.
    pub(super) async fn presence(&mut self, key: &str) -> Presence {
        if self.last_asked.as_deref().is_some_and(|last| key <= last) {
            self.listing = None;
        }
        let Some(listing) = &mut self.listing else {
            return Presence::Unknown;
        };
        self.last_asked = Some(key.to_string());
        loop {
            match &self.current {
                Some(current) if current.as_str() == key => return Presence::Unknown,
                Some(current) if current.as_str() > key => return Presence::Absent,
                _ if self.ended => return Presence::Absent,
                _ => {}
            }
            match listing.recv().await {
                Some(Entry::Key(next)) => self.current = Some(next),
                Some(Entry::End) => {
                    self.current = None;
                    self.ended = true;
                }
                // The listing failed: nothing past here is known.
                None => {
                    self.listing = None;
                    return Presence::Unknown;
                }
            }
        }
    }
}
