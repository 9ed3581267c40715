//! Cluster-token authentication: every RPC carries `authorization: Bearer <token>`. The token is
//! created on first start in the data directory with owner-only permissions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::RngCore;
use tonic::{Request, Status};

use crate::error::MasterError;

/// File name of the token inside the data directory.
pub const TOKEN_FILE: &str = "token";

/// Where the token of a data directory lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token in `data_dir`, creating a random one (mode 0600) if there is none.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, MasterError> {
    let path = token_path(data_dir);
    let io = |e: std::io::Error| MasterError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if path.exists() {
        return load_token(&path);
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    write_private(&path, &token).map_err(io)?;
    tracing::info!(path = %path.display(), "created cluster token");
    Ok(token)
}

/// Reads a token file (`data_dir/token`, or the file `master serve --token-file` names, e.g. a
/// mounted Kubernetes Secret); surrounding white space is ignored, at least 16 characters remain.
pub fn load_token(path: &Path) -> Result<String, MasterError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| MasterError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(MasterError::FailedPrecondition(format!(
            "token in {} is shorter than 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a call without the right token is told.
pub const UNAUTHENTICATED: &str = "missing or wrong cluster token (see --token-file)";

/// A tonic interceptor that refuses calls without the cluster token, and counts them.
#[derive(Clone)]
pub struct TokenAuth {
    token: Arc<String>,
    refused: Arc<AtomicU64>,
}

impl TokenAuth {
    /// Checks calls against `token`.
    pub fn new(token: String) -> Self {
        TokenAuth {
            token: Arc::new(token),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many calls were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The interceptor function.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let remote = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if self.accepts(authorization, &remote) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(UNAUTHENTICATED))
        }
    }

    /// Whether an `authorization` header value (`Bearer TOKEN`) carries the cluster token; a
    /// refusal is counted and logged with `remote`. Used by gRPC and HTTP alike.
    pub fn accepts(&self, authorization: Option<&str>, remote: &str) -> bool {
        let presented = authorization.and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => true,
            other => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(remote = %remote, refused_total = n, token_present = other.is_some(), "refused unauthenticated call");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_token(dir.path()).unwrap();
        let b = load_or_create_token(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn interceptor_refuses_and_counts() {
        let auth = TokenAuth::new("s3cret-token-abcdef".into());
        assert!(auth.check(Request::new(())).is_err());
        let mut wrong = Request::new(());
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            auth.check(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut right = Request::new(());
        right.metadata_mut().insert(
            "authorization",
            "Bearer s3cret-token-abcdef".parse().unwrap(),
        );
        assert!(auth.check(right).is_ok());
        assert_eq!(auth.refused(), 2);
    }
}
