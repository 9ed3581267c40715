//! Content-addressed checkpoints behind the `object_store` crate: each blob is the object
//! `<prefix>/<sha[0..2]>/<sha>` of a local directory (the default) or of object storage (see
//! [`ArtifactLocation`]), so every master of a cluster reaches the same checkpoints.
//!
//! An upload streams to `<prefix>/tmp/<random>.part` while its SHA-256 is computed, then is
//! renamed to its hash: a crash never leaves a torn checkpoint under a hash. On a directory the
//! blob is also synced to disk before the master records it. Partial uploads older than
//! [`STALE_UPLOAD`] are removed when a store opens; younger ones may be another master's upload
//! in progress on a shared volume, and are left alone.

mod location;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};

pub use location::ArtifactLocation;

use crate::error::MasterError;

/// How old a partial upload must be before a store that opens removes it. Uploads have a
/// ten-minute deadline; anything older was abandoned by a master that died.
pub const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// How many hashes [`ArtifactStore::contains`] remembers as present before it starts over:
/// blobs are immutable, so a hash seen once needs no second round trip (64 K hashes ≈ 8 MB).
const KNOWN_CAPACITY: usize = 1 << 16;

/// Checkpoints keyed by SHA-256, in a directory or in object storage.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    prefix: Key,
    location: ArtifactLocation,
    max_bytes: u64,
    known: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("location", &self.location.to_string())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// An upload in progress: bytes stream to a temporary object while the hash is computed.
/// Dropping an unfinished upload (the client went away mid-stream) aborts it.
pub struct Upload {
    store: ArtifactStore,
    tmp: Key,
    writer: Option<WriteMultipart>,
    hasher: Sha256,
    size: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = writer.abort().await;
                });
            }
        }
    }
}

/// Whether `sha` looks like a lowercase hex SHA-256.
pub fn is_sha256(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ArtifactStore {
    /// Opens the store at `location`; blobs larger than `max_bytes` are refused. Partial
    /// uploads older than [`STALE_UPLOAD`] are removed.
    pub async fn open(
        location: &ArtifactLocation,
        max_bytes: u64,
    ) -> Result<ArtifactStore, MasterError> {
        let (inner, prefix) = location.open()?;
        let store = ArtifactStore {
            inner,
            prefix,
            location: location.clone(),
            max_bytes,
            known: Arc::new(Mutex::new(HashSet::new())),
        };
        store.remove_stale_uploads().await?;
        Ok(store)
    }

    /// Opens a directory store (the default layout, `<data-dir>/artifacts`).
    pub async fn open_dir(dir: &Path, max_bytes: u64) -> Result<ArtifactStore, MasterError> {
        Self::open(&ArtifactLocation::Dir(dir.to_path_buf()), max_bytes).await
    }

    /// Where the checkpoints live, for logs (secrets removed).
    pub fn location(&self) -> String {
        self.location.to_string()
    }

    fn key_of(&self, sha: &str) -> Result<Key, MasterError> {
        if !is_sha256(sha) {
            return Err(MasterError::InvalidArgument(format!(
                "{sha:?} is not a sha256 hex digest"
            )));
        }
        Ok(self.prefix.child(&sha[..2]).child(sha))
    }

    fn tmp_dir(&self) -> Key {
        self.prefix.child("tmp")
    }

    fn err(&self, key: &Key, e: object_store::Error) -> MasterError {
        match e {
            object_store::Error::NotFound { .. } => {
                MasterError::NotFound(format!("checkpoint {key} in {}", self.location))
            }
            e => MasterError::Io {
                path: format!("{} ({key})", self.location),
                reason: explore_common::client::error_chain(&e),
            },
        }
    }

    /// Whether the blob exists. Absence is `false`; a store that cannot answer is an error.
    pub async fn contains(&self, sha: &str) -> Result<bool, MasterError> {
        let Ok(key) = self.key_of(sha) else {
            return Ok(false);
        };
        if self.known.lock().expect("known hashes").contains(sha) {
            return Ok(true);
        }
        match self.inner.head(&key).await {
            Ok(_) => {
                self.remember(sha);
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(&key, e)),
        }
    }

    fn remember(&self, sha: &str) {
        let mut known = self.known.lock().expect("known hashes");
        if known.len() >= KNOWN_CAPACITY {
            known.clear();
        }
        known.insert(sha.to_string());
    }

    /// Starts an upload.
    pub async fn begin_upload(&self) -> Result<Upload, MasterError> {
        let tmp = self.tmp_dir().child(format!("{}.part", random_name()));
        let upload = self
            .inner
            .put_multipart(&tmp)
            .await
            .map_err(|e| self.err(&tmp, e))?;
        Ok(Upload {
            store: self.clone(),
            tmp,
            writer: Some(WriteMultipart::new(upload)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Reads a whole blob into memory (tests and tools; the worker service streams with
    /// [`ArtifactStore::read_chunks`]).
    pub async fn read(&self, sha: &str) -> Result<Vec<u8>, MasterError> {
        let pieces: Vec<Bytes> = self.read_chunks(sha, 1 << 20).await?.try_collect().await?;
        Ok(pieces.concat())
    }

    /// Streams a blob in pieces of exactly `chunk_bytes` (the last one shorter), without
    /// holding it in memory. A missing blob is `NotFound` before the stream starts.
    pub async fn read_chunks(
        &self,
        sha: &str,
        chunk_bytes: usize,
    ) -> Result<impl Stream<Item = Result<Bytes, MasterError>> + Send + 'static, MasterError> {
        let key = self.key_of(sha)?;
        let got = self.inner.get(&key).await.map_err(|e| self.err(&key, e))?;
        let store = self.clone();
        let pieces = got
            .into_stream()
            .map_err(move |e| store.err(&key, e))
            .boxed();
        Ok(rechunk(pieces, chunk_bytes))
    }

    /// Removes partial uploads older than [`STALE_UPLOAD`]. On a directory this includes the
    /// crate's staging files, which its listing does not show.
    async fn remove_stale_uploads(&self) -> Result<(), MasterError> {
        if let Some(dir) = self.location.dir() {
            let tmp = dir.join("tmp");
            return tokio::task::spawn_blocking(move || remove_old_files(&tmp, STALE_UPLOAD))
                .await
                .map_err(|e| MasterError::Internal(e.to_string()))?;
        }
        let tmp = self.tmp_dir();
        let mut listing = self.inner.list(Some(&tmp));
        let cutoff = chrono_cutoff(STALE_UPLOAD);
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(&tmp, e))?;
            if meta.last_modified.timestamp_millis() < cutoff {
                let _ = self.inner.delete(&meta.location).await;
            }
        }
        Ok(())
    }
}

/// Milliseconds since the epoch `age` ago.
fn chrono_cutoff(age: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(age).as_millis() as i64
}

/// Deletes the files directly in `dir` last modified more than `age` ago.
fn remove_old_files(dir: &PathBuf, age: Duration) -> Result<(), MasterError> {
    let io = |e: std::io::Error| MasterError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let now = SystemTime::now();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|elapsed| elapsed > age);
        if meta.is_file() && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Regroups a stream of byte pieces of any sizes into pieces of `size` bytes.
fn rechunk(
    pieces: futures::stream::BoxStream<'static, Result<Bytes, MasterError>>,
    size: usize,
) -> impl Stream<Item = Result<Bytes, MasterError>> + Send + 'static {
    let size = size.max(1);
    futures::stream::unfold(
        (pieces, bytes::BytesMut::new(), false),
        move |(mut pieces, mut buf, mut done)| async move {
            loop {
                if buf.len() >= size {
                    let out = buf.split_to(size).freeze();
                    return Some((Ok(out), (pieces, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let out = buf.split().freeze();
                    return Some((Ok(out), (pieces, buf, done)));
                }
                match pieces.next().await {
                    Some(Ok(piece)) => buf.extend_from_slice(&piece),
                    Some(Err(e)) => return Some((Err(e), (pieces, buf, true))),
                    None => done = true,
                }
            }
        },
    )
}

fn random_name() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}

impl Upload {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.writer
            .as_mut()
            .expect("an upload is used until it ends")
    }

    /// Appends a chunk; fails once the total exceeds the store's limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), MasterError> {
        self.size += chunk.len() as u64;
        if self.size > self.store.max_bytes {
            return Err(MasterError::TooLarge(format!(
                "checkpoint exceeds the limit of {} bytes",
                self.store.max_bytes
            )));
        }
        self.hasher.update(chunk);
        // At most a few parts in flight, so a fast client cannot fill the master's memory.
        let store = self.store.clone();
        let tmp = self.tmp.clone();
        self.writer()
            .wait_for_capacity(4)
            .await
            .map_err(|e| store.err(&tmp, e))?;
        self.writer().write(chunk);
        Ok(())
    }

    /// Completes the upload and moves the blob to its hash (synced to disk on a directory);
    /// returns its hash and size.
    pub async fn finish(mut self) -> Result<(String, u64), MasterError> {
        let writer = self.writer.take().expect("finish ends the upload");
        let store = self.store.clone();
        writer.finish().await.map_err(|e| store.err(&self.tmp, e))?;
        let sha = hex::encode(self.hasher.finalize_reset());
        let dest = store.key_of(&sha)?;
        if let Err(e) = store.inner.rename(&self.tmp, &dest).await {
            let _ = store.inner.delete(&self.tmp).await;
            return Err(store.err(&dest, e));
        }
        if let Some(dir) = store.location.dir() {
            let file = dir.join(&sha[..2]).join(&sha);
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .map_err(|e| MasterError::Internal(e.to_string()))??;
        }
        store.remember(&sha);
        Ok((sha, self.size))
    }

    /// Abandons the upload and removes what was written.
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.abort().await;
        }
    }
}

/// Flushes a file and its directory entry to disk, so a recorded checkpoint survives a power
/// loss (the crate's local store renames without syncing).
fn sync_file_and_dir(file: &Path) -> Result<(), MasterError> {
    let io = |e: std::io::Error| MasterError::Io {
        path: file.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    if let Some(parent) = file.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
