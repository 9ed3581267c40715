//! Where checkpoints live: `--artifacts` parsed into an object store and a key prefix.
//!
//! A plain path (or `file://` URL) is a local directory, the default (`<data-dir>/artifacts`);
//! in Kubernetes it is a volume every master mounts. With the `cloud` feature, `s3://bucket/prefix`,
//! `gs://bucket/prefix` and `az://container/prefix` (also `abfs://`, `abfss://`) reach object
//! storage, configured by the provider's usual environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for an S3-compatible server,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …). `memory://` keeps them in memory:
//! tests only, as every checkpoint is lost when the master stops.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as Key;
use object_store::ObjectStore;

use crate::error::MasterError;

/// A parsed `--artifacts` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactLocation {
    /// A directory on a local or mounted file system.
    Dir(PathBuf),
    /// Process memory (tests).
    Memory,
    /// An object-storage URL (`s3://`, `gs://`, `az://`, `abfs://`, `abfss://`).
    Url(String),
}

/// URL schemes that name object storage.
const CLOUD_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"];

impl ArtifactLocation {
    /// Parses a directory path or a URL. A URL with a scheme this build does not know is refused,
    /// naming the schemes it does.
    pub fn parse(value: &str) -> Result<ArtifactLocation, MasterError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(MasterError::InvalidArgument(
                "--artifacts is empty: give a directory or an object-storage URL".into(),
            ));
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Ok(ArtifactLocation::Dir(PathBuf::from(value)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(ArtifactLocation::Dir(PathBuf::from(rest))),
            "memory" => Ok(ArtifactLocation::Memory),
            s if CLOUD_SCHEMES.contains(&s) => {
                if rest.trim_matches('/').is_empty() {
                    return Err(MasterError::InvalidArgument(format!(
                        "--artifacts {value}: the URL names no bucket or container"
                    )));
                }
                Ok(ArtifactLocation::Url(value.to_string()))
            }
            other => Err(MasterError::InvalidArgument(format!(
                "--artifacts {}: unknown scheme {other:?}; use a directory, file://, s3://, gs:// or az://",
                redact(value)
            ))),
        }
    }

    /// The directory, when the checkpoints live on a file system.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ArtifactLocation::Dir(dir) => Some(dir),
            _ => None,
        }
    }

    /// Opens the store and the key prefix every blob lives under. A directory is created.
    pub(super) fn open(&self) -> Result<(Arc<dyn ObjectStore>, Key), MasterError> {
        match self {
            ArtifactLocation::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| MasterError::Io {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                        MasterError::Io {
                            path: dir.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                Ok((Arc::new(fs), Key::default()))
            }
            ArtifactLocation::Memory => Ok((
                Arc::new(object_store::memory::InMemory::new()),
                Key::default(),
            )),
            ArtifactLocation::Url(url) => open_url(url),
        }
    }
}

impl fmt::Display for ArtifactLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactLocation::Dir(dir) => write!(f, "{}", dir.display()),
            ArtifactLocation::Memory => f.write_str("memory://"),
            ArtifactLocation::Url(url) => f.write_str(&redact(url)),
        }
    }
}

/// The URL without user information or query, which may carry secrets.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = match rest.find('@') {
        Some(at) if rest.find('/').is_none_or(|slash| at < slash) => &rest[at + 1..],
        _ => rest,
    };
    format!("{scheme}://{rest}")
}

#[cfg(feature = "cloud")]
fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, Key), MasterError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| MasterError::InvalidArgument(format!("--artifacts {}: {e}", redact(url))))?;
    let refuse = |e: object_store::Error| {
        MasterError::InvalidArgument(format!(
            "--artifacts {}: {}",
            redact(url),
            explore_common::client::error_chain(&e)
        ))
    };
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(refuse)?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(refuse)?,
        ),
        _ => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(refuse)?,
        ),
    };
    let prefix = Key::parse(parsed.path().trim_matches('/'))
        .map_err(|e| MasterError::InvalidArgument(format!("--artifacts {}: {e}", redact(url))))?;
    Ok((store, prefix))
}

#[cfg(not(feature = "cloud"))]
fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, Key), MasterError> {
    Err(MasterError::InvalidArgument(format!(
        "--artifacts {}: this master was built without object storage; rebuild it with \
         `--features cloud` (the default) or use a directory",
        redact(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_parse_to_their_kind() {
        assert_eq!(
            ArtifactLocation::parse("/data/artifacts").unwrap(),
            ArtifactLocation::Dir("/data/artifacts".into())
        );
        assert_eq!(
            ArtifactLocation::parse("file:///data/a").unwrap(),
            ArtifactLocation::Dir("/data/a".into())
        );
        assert_eq!(
            ArtifactLocation::parse("memory://").unwrap(),
            ArtifactLocation::Memory
        );
        assert_eq!(
            ArtifactLocation::parse("s3://bucket/runs").unwrap(),
            ArtifactLocation::Url("s3://bucket/runs".into())
        );
    }

    #[test]
    fn bad_locations_are_refused_with_the_reason() {
        let err = ArtifactLocation::parse("ftp://host/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scheme \"ftp\""), "{err}");
        let err = ArtifactLocation::parse("s3://").unwrap_err().to_string();
        assert!(err.contains("names no bucket"), "{err}");
        let err = ArtifactLocation::parse("  ").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn secrets_in_a_url_are_never_shown() {
        assert_eq!(
            redact("s3://key:secret@bucket/p?token=abc"),
            "s3://bucket/p"
        );
        let shown = ArtifactLocation::parse("gs://b/p?sig=xyz")
            .unwrap()
            .to_string();
        assert_eq!(shown, "gs://b/p");
        let err = ArtifactLocation::parse("ftp://u:pw@h/x?k=v")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw") && !err.contains("k=v"), "{err}");
    }

    #[cfg(not(feature = "cloud"))]
    #[test]
    fn a_url_without_the_cloud_feature_says_how_to_get_it() {
        let err = ArtifactLocation::Url("s3://bucket/p".into())
            .open()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("built without object storage"), "{err}");
        assert!(err.contains("--features cloud"), "{err}");
    }

    #[cfg(feature = "cloud")]
    #[test]
    fn a_url_prefix_becomes_the_key_prefix() {
        let (_, prefix) = ArtifactLocation::Url("s3://bucket/team/runs/".into())
            .open()
            .unwrap();
        assert_eq!(prefix.as_ref(), "team/runs");
    }
}
