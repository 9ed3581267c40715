//! Content-addressed checkpoint files: each blob lives at `<dir>/<sha[0..2]>/<sha>` and is
//! written to a temporary file first, then renamed, so a crash never leaves a torn checkpoint.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::MasterError;

/// A directory of checkpoints keyed by SHA-256.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    max_bytes: u64,
}

/// An upload in progress: bytes go to a temporary file while the hash is computed. Dropping an
/// unfinished upload (the client went away mid-stream) removes the temporary file.
pub struct Upload {
    store: ArtifactStore,
    tmp_path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    finished: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> MasterError {
    MasterError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
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
    /// Opens (creating) the directory; blobs larger than `max_bytes` are refused. Partial
    /// uploads left by a crash are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ArtifactStore, MasterError> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(dir, e))?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn path_of(&self, sha: &str) -> Result<PathBuf, MasterError> {
        if !is_sha256(sha) {
            return Err(MasterError::InvalidArgument(format!(
                "{sha:?} is not a sha256 hex digest"
            )));
        }
        Ok(self.dir.join(&sha[..2]).join(sha))
    }

    /// Whether the blob exists.
    pub fn contains(&self, sha: &str) -> bool {
        self.path_of(sha).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Starts an upload.
    pub async fn begin_upload(&self) -> Result<Upload, MasterError> {
        let tmp_path = self.dir.join("tmp").join(uuid_like());
        let file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(|e| io_err(&tmp_path, e))?;
        Ok(Upload {
            store: self.clone(),
            tmp_path,
            file,
            hasher: Sha256::new(),
            size: 0,
            finished: false,
        })
    }

    /// Reads a whole blob.
    pub async fn read(&self, sha: &str) -> Result<Vec<u8>, MasterError> {
        let path = self.path_of(sha)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(MasterError::NotFound(format!("checkpoint {sha}")))
            }
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}.part")
}

impl Upload {
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
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| io_err(&self.tmp_path, e))
    }

    /// Flushes, syncs and moves the blob into place; returns its hash and size.
    pub async fn finish(mut self) -> Result<(String, u64), MasterError> {
        self.file
            .flush()
            .await
            .map_err(|e| io_err(&self.tmp_path, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| io_err(&self.tmp_path, e))?;
        let sha = hex::encode(self.hasher.finalize_reset());
        let dest = self.store.path_of(&sha)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err(parent, e))?;
        }
        tokio::fs::rename(&self.tmp_path, &dest)
            .await
            .map_err(|e| io_err(&dest, e))?;
        Ok((sha, self.size))
    }

    /// Drops the partial file.
    pub async fn abort(mut self) {
        let _ = tokio::fs::remove_file(&self.tmp_path).await;
        self.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_is_content_addressed_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path(), 10).unwrap();
        let mut up = store.begin_upload().await.unwrap();
        up.write(b"hello").await.unwrap();
        let (sha, size) = up.finish().await.unwrap();
        assert_eq!(size, 5);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello")));
        assert_eq!(store.read(&sha).await.unwrap(), b"hello");

        let mut up = store.begin_upload().await.unwrap();
        up.write(b"0123456789").await.unwrap();
        assert!(matches!(
            up.write(b"x").await,
            Err(MasterError::TooLarge(_))
        ));
        assert!(matches!(
            store.read(&"0".repeat(64)).await,
            Err(MasterError::NotFound(_))
        ));
        assert!(store.path_of("../etc/passwd").is_err());
    }

    #[tokio::test]
    async fn an_abandoned_upload_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path(), 1024).unwrap();
        let mut up = store.begin_upload().await.unwrap();
        up.write(b"half a checkpoint").await.unwrap();
        drop(up);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // A crash leaves files behind; reopening clears them.
        std::fs::write(dir.path().join("tmp").join("x.part"), b"torn").unwrap();
        ArtifactStore::open(dir.path(), 1024).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
