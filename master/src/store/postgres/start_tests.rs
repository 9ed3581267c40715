//! What a master meets when it opens a PostgreSQL pool (a bad URL, a server that is not there,
//! a schema from a newer release) and the election between masters on one database, with its
//! fence. They need a server (`EXPLORE_TEST_PG_URL`) except the first two.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::election::Fence;
use super::testing::Scratch;
use super::*;
use crate::leader::Election;
use crate::store::Store;

/// Runs a statement on a store's own connection.
async fn execute(store: &Store, sql: &str) {
    let mut conn = store.conn().await.unwrap();
    crate::store::suite::raw_execute(&mut *conn, sql).await;
}

#[tokio::test]
async fn a_malformed_url_is_refused_by_name_without_its_password() {
    let err = connect("postgres://explore:hunter2@db:notaport/pool")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MasterError::InvalidArgument(_)), "{err:?}");
    assert!(text.contains("malformed database URL"), "{text}");
    assert!(text.contains("explore:***@db"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_named() {
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("explore");
    let started = Instant::now();
    let err = connect_retrying(options, Duration::from_millis(1600))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        text.contains("after 2 attempts") || text.contains("after 3 attempts"),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it retried"
    );
}

#[tokio::test]
async fn a_schema_from_a_newer_release_is_refused_naming_both_versions() {
    let Some(scratch) = Scratch::create("a_schema_from_a_newer_release").await else {
        return;
    };
    execute(
        scratch.store(),
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', TRUE, '\\x00'::bytea, 0)",
    )
    .await;
    let err = connect_with(scratch.options()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MasterError::FailedPrecondition(_)), "{err:?}");
    assert!(text.contains("migration 99"), "{text}");
    assert!(
        text.contains(&format!("versions 1 to {}", migrations::MIGRATIONS.len())),
        "{text}"
    );
    scratch.drop_schema().await;
}

/// A second backend on the scratch pool, as a second master opens it.
async fn second_backend(scratch: &Scratch) -> PgBackend {
    PgBackend::from_pool(connect_with(scratch.options()).await.unwrap())
}

/// Tries for up to 10 s to win the election (a dropped session takes a moment to end).
async fn win(election: &dyn Election) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(epoch) = election.try_acquire().await.unwrap() {
            return epoch;
        }
        assert!(Instant::now() < deadline, "never won the election");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_master_wins_and_the_standby_takes_over_when_its_session_ends() {
    let Some(scratch) = Scratch::create("one_master_wins").await else {
        return;
    };
    let first = second_backend(&scratch).await;
    let second = second_backend(&scratch).await;
    let a = first.election("a").await.unwrap();
    let b = second.election("b").await.unwrap();

    // Standing by, neither may write yet.
    let refused = second.begin().await.err().expect("a standby cannot write");
    assert!(refused.to_string().contains("standby"), "{refused}");

    assert_eq!(a.try_acquire().await.unwrap(), Some(1));
    assert_eq!(b.try_acquire().await.unwrap(), None, "one active master");
    assert_eq!(b.holder().await.as_deref(), Some("a"));
    first.begin().await.unwrap().commit().await.unwrap();
    assert!(
        second.begin().await.is_err(),
        "the standby still cannot write"
    );

    // A's process dies: its session ends, and B wins with a larger epoch.
    drop(a);
    assert_eq!(win(b.as_ref()).await, 2);
    assert_eq!(b.holder().await.as_deref(), Some("b"));
    second.begin().await.unwrap().commit().await.unwrap();
    scratch.drop_schema().await;
}

#[tokio::test]
async fn a_former_leader_cannot_commit_after_the_takeover() {
    let Some(scratch) = Scratch::create("a_former_leader_cannot_commit").await else {
        return;
    };
    let old = second_backend(&scratch).await;
    let new = second_backend(&scratch).await;
    let old_election = old.election("old").await.unwrap();
    let new_election = new.election("new").await.unwrap();
    assert_eq!(old_election.try_acquire().await.unwrap(), Some(1));

    // A write of the old leader that began before the takeover...
    let mut before = old.begin().await.unwrap();
    before
        .insert_experiment(&"exp-0000000000000001".parse().unwrap(), "before", "{}", 1)
        .await
        .unwrap();
    // ...its session ends (the old master does not notice yet), and the new one takes over:
    // the takeover waits for that write, which still commits under the old epoch.
    drop(old_election);
    let takeover = tokio::spawn(async move {
        let epoch = win(new_election.as_ref()).await;
        (epoch, new_election)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover waits for the open write"
    );
    before.commit().await.unwrap();
    let (epoch, _new_election) = takeover.await.unwrap();
    assert_eq!(epoch, 2);

    // After the takeover the former leader can start no write at all.
    let fenced = old
        .begin()
        .await
        .err()
        .expect("the former leader is fenced");
    let text = fenced.to_string();
    assert!(matches!(fenced, MasterError::Unavailable(_)), "{fenced:?}");
    assert!(
        text.contains("fenced") && text.contains("epoch 2"),
        "{text}"
    );
    assert_eq!(old.fence_epoch(), 1, "it still believes it leads");
    new.begin().await.unwrap().commit().await.unwrap();

    // Both writes are there: the one before the takeover, none after it from the old leader.
    let mut conn = new.read().await.unwrap();
    let names: Vec<String> = conn
        .list_experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["before"]);
    drop(conn);
    scratch.drop_schema().await;
}

#[test]
fn a_free_fence_checks_nothing() {
    assert_eq!(Fence::free().epoch(), Fence::FREE);
}
