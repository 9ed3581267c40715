use super::*;

use proptest::prelude::*;

async fn put(store: &ArtifactStore, bytes: &[u8]) -> String {
    let mut up = store.begin_upload().await.unwrap();
    for chunk in bytes.chunks(100_000) {
        up.write(chunk).await.unwrap();
    }
    up.finish().await.unwrap().0
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("tmp"))
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn upload_is_content_addressed_and_limited_on_every_kind_of_store() {
    let dir = tempfile::tempdir().unwrap();
    for location in [
        ArtifactLocation::Dir(dir.path().to_path_buf()),
        ArtifactLocation::Memory,
    ] {
        let store = ArtifactStore::open(&location, 10).await.unwrap();
        let mut up = store.begin_upload().await.unwrap();
        up.write(b"hello").await.unwrap();
        let (sha, size) = up.finish().await.unwrap();
        assert_eq!(size, 5);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello")));
        assert_eq!(store.read(&sha).await.unwrap(), b"hello");
        assert!(store.contains(&sha).await.unwrap());

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
        assert!(!store.contains(&"0".repeat(64)).await.unwrap());
        assert!(!store.contains("../etc/passwd").await.unwrap());
        assert!(store.read("../etc/passwd").await.is_err());
    }
}

#[tokio::test]
async fn a_directory_keeps_the_layout_of_earlier_releases() {
    // Data directories written before the object-store seam must stay readable.
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    let sha = put(&store, b"weights").await;
    let file = dir.path().join(&sha[..2]).join(&sha);
    assert_eq!(std::fs::read(&file).unwrap(), b"weights");

    let old = hex::encode(Sha256::digest(b"older weights"));
    std::fs::create_dir_all(dir.path().join(&old[..2])).unwrap();
    std::fs::write(dir.path().join(&old[..2]).join(&old), b"older weights").unwrap();
    let reopened = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    assert!(reopened.contains(&old).await.unwrap());
    assert_eq!(reopened.read(&old).await.unwrap(), b"older weights");
}

#[tokio::test]
async fn a_blob_another_master_stored_is_found() {
    // Two masters on one shared volume: what one stores, the other reads, although it never
    // saw the upload.
    let dir = tempfile::tempdir().unwrap();
    let a = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    let b = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    let sha = hex::encode(Sha256::digest(b"shared"));
    assert!(!b.contains(&sha).await.unwrap());
    assert_eq!(put(&a, b"shared").await, sha);
    assert!(b.contains(&sha).await.unwrap());
    assert_eq!(b.read(&sha).await.unwrap(), b"shared");
}

#[tokio::test]
async fn an_abandoned_upload_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_dir(dir.path(), 1024).await.unwrap();
    let mut up = store.begin_upload().await.unwrap();
    up.write(b"half a checkpoint").await.unwrap();
    drop(up);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !tmp_files(dir.path()).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );

    let up = store.begin_upload().await.unwrap();
    up.abort().await;
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );
}

#[tokio::test]
async fn opening_removes_stale_partial_uploads_but_not_one_in_progress() {
    // Regression: a master that opened the store deleted every partial upload, including those
    // another master on the same shared volume was receiving at that moment.
    let dir = tempfile::tempdir().unwrap();
    let a = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    let mut in_progress = a.begin_upload().await.unwrap();
    in_progress.write(b"first half ").await.unwrap();

    let stale = dir.path().join("tmp").join("crashed.part#1");
    std::fs::write(&stale, b"torn").unwrap();
    let hours_ago = SystemTime::now() - STALE_UPLOAD - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hours_ago)
        .unwrap();

    let _b = ArtifactStore::open_dir(dir.path(), 1 << 20).await.unwrap();
    assert!(!stale.exists(), "a stale partial upload survived");
    in_progress.write(b"second half").await.unwrap();
    let (sha, _) = in_progress.finish().await.unwrap();
    assert_eq!(a.read(&sha).await.unwrap(), b"first half second half");
}

#[tokio::test]
async fn reading_in_chunks_gives_the_blob_in_pieces_of_the_asked_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_dir(dir.path(), 8 << 20).await.unwrap();
    let blob: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
    let sha = put(&store, &blob).await;
    let pieces: Vec<Bytes> = store
        .read_chunks(&sha, 256 * 1024)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    assert_eq!(sizes, [262_144, 262_144, 262_144, 262_144, 3]);
    assert_eq!(pieces.concat(), blob);
    assert!(matches!(
        store.read_chunks(&"f".repeat(64), 1024).await.err(),
        Some(MasterError::NotFound(_))
    ));
}

proptest! {
    #[test]
    fn rechunking_keeps_every_byte_in_order(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..20),
        size in 1usize..40,
    ) {
        let input: Vec<u8> = pieces.concat();
        let stream = futures::stream::iter(
            pieces.into_iter().map(|p| Ok::<_, MasterError>(Bytes::from(p))),
        )
        .boxed();
        let out: Vec<Bytes> = futures::executor::block_on(rechunk(stream, size).try_collect())
            .unwrap();
        prop_assert_eq!(out.concat(), input);
        if let Some((last, full)) = out.split_last() {
            prop_assert!(full.iter().all(|c| c.len() == size));
            prop_assert!(!last.is_empty() && last.len() <= size);
        }
    }
}
