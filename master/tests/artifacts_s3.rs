//! The artifact store on real object storage: moto's S3-compatible server on loopback (see
//! `explore_tests::s3`), reached through the same `object_store` code as AWS S3. Checkpoints
//! larger than one multipart part round-trip intact, another store on the same bucket finds
//! them, an abandoned or aborted upload leaves no object, and the prefix of the URL is honoured.
//! Built with the `cloud` feature only (scripts/test.sh builds it).
#![cfg(feature = "cloud")]

use explore_master::artifacts::{ArtifactLocation, ArtifactStore};
use explore_master::error::MasterError;
use explore_tests::s3::S3Server;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

const BUCKET: &str = "explore-artifacts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_round_trip_through_s3() {
    let Some(s3) = S3Server::start("checkpoints_round_trip_through_s3", BUCKET) else {
        return;
    };
    // object_store reads its S3 settings from the environment, as the master does; this file
    // holds one test, so no other test sees them.
    for (key, value) in s3.env() {
        std::env::set_var(key, value);
    }
    let location = ArtifactLocation::parse(&format!("s3://{BUCKET}/runs/a")).unwrap();
    let store = ArtifactStore::open(&location, 64 << 20).await.unwrap();

    // 12 MiB in 256 KiB writes: three multipart parts.
    let blob: Vec<u8> = (0..12u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut up = store.begin_upload().await.unwrap();
    for chunk in blob.chunks(256 * 1024) {
        up.write(chunk).await.unwrap();
    }
    let (sha, size) = up.finish().await.unwrap();
    assert_eq!(size, blob.len() as u64);
    assert_eq!(sha, hex::encode(Sha256::digest(&blob)));
    assert_eq!(
        s3.keys("runs/a/").unwrap(),
        [format!("runs/a/{}/{sha}", &sha[..2])],
        "one object under the URL's prefix, at its hash, no partial upload left"
    );

    // A second master's store on the same bucket reads it, in exact chunks.
    let other = ArtifactStore::open(&location, 64 << 20).await.unwrap();
    assert!(other.contains(&sha).await.unwrap());
    let pieces: Vec<bytes::Bytes> = other
        .read_chunks(&sha, 1 << 20)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pieces.len(), 12);
    assert!(pieces.iter().all(|p| p.len() == 1 << 20));
    assert_eq!(pieces.concat(), blob);
    assert_eq!(other.read(&sha).await.unwrap(), blob);

    // Absent blobs are absent, not errors; aborted and abandoned uploads leave nothing.
    let missing = "a".repeat(64);
    assert!(!store.contains(&missing).await.unwrap());
    assert!(matches!(
        store.read(&missing).await,
        Err(MasterError::NotFound(_))
    ));
    let mut aborted = store.begin_upload().await.unwrap();
    aborted.write(&blob[..6 << 20]).await.unwrap();
    aborted.abort().await;
    let mut dropped = store.begin_upload().await.unwrap();
    dropped.write(b"half").await.unwrap();
    drop(dropped);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s3.keys("runs/a/").unwrap().len(), 1);

    // A store on another prefix of the bucket does not see this one's checkpoints.
    let elsewhere = ArtifactLocation::parse(&format!("s3://{BUCKET}/runs/b")).unwrap();
    let elsewhere = ArtifactStore::open(&elsewhere, 64 << 20).await.unwrap();
    assert!(!elsewhere.contains(&sha).await.unwrap());
}
