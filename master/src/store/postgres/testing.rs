//! A scratch PostgreSQL pool for tests: a fresh schema on the server `EXPLORE_TEST_PG_URL`
//! names, migrated, wrapped in a [`Store`]. Without the variable the test says so and passes,
//! unless `EXPLORE_REQUIRE_PG` is set (as in CI), when it fails.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{connect_with, PgBackend};
use crate::store::Store;

/// The variable naming the test server.
pub const URL_VAR: &str = "EXPLORE_TEST_PG_URL";
/// Set (CI): PostgreSQL tests must run, never skip.
pub const REQUIRE_VAR: &str = "EXPLORE_REQUIRE_PG";

/// A store on a schema of its own that belongs to `dir` (its name kept in `dir/pg-schema`), so
/// that opening it again, as a restarted master would, finds the same pool. Panics when no
/// server is configured: the caller asked for PostgreSQL.
pub async fn store_for_dir(dir: &std::path::Path) -> Store {
    let url = std::env::var(URL_VAR)
        .unwrap_or_else(|_| panic!("PostgreSQL tests were asked for but {URL_VAR} is not set"));
    let file = dir.join("pg-schema");
    let schema = match std::fs::read_to_string(&file) {
        Ok(schema) => schema,
        Err(_) => {
            let schema = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
            let mut admin = PgConnection::connect(&url).await.expect("connecting");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut admin)
                .await
                .expect("creating the test schema");
            admin.close().await.ok();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&file, &schema).unwrap();
            schema
        }
    };
    let options = PgConnectOptions::from_str(&url)
        .expect("a postgres:// URL")
        .options([("search_path", schema.as_str())]);
    let pool = connect_with(options)
        .await
        .expect("connecting and migrating");
    Store::from_backend(PgBackend::from_pool(pool))
}

/// A migrated store in a schema of its own; [`Scratch::drop_schema`] removes it.
pub struct Scratch {
    url: String,
    schema: String,
    store: Store,
}

impl Scratch {
    /// The test server's URL, or None (with a message naming `test`) when it is not set.
    pub fn url(test: &str) -> Option<String> {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    std::env::var_os(REQUIRE_VAR).is_none(),
                    "{test}: {REQUIRE_VAR} is set but {URL_VAR} is not"
                );
                eprintln!("skipping {test}: {URL_VAR} is not set (a postgres:// URL)");
                None
            }
        }
    }

    /// A fresh schema, migrated, or None when no server is configured.
    pub async fn create(test: &str) -> Option<Scratch> {
        let url = Self::url(test)?;
        let schema = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{test}: connecting to {URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("creating the test schema");
        admin.close().await.ok();
        let options = PgConnectOptions::from_str(&url)
            .expect("a postgres:// URL")
            .options([("search_path", schema.as_str())]);
        let pool = connect_with(options)
            .await
            .expect("connecting and migrating");
        let store = Store::from_backend(PgBackend::from_pool(pool));
        Some(Scratch { url, schema, store })
    }

    /// The store on the scratch schema.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Connection options for the scratch schema (a second backend on the same pool, as a
    /// second master would open it).
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url)
            .expect("a postgres:// URL")
            .options([("search_path", self.schema.as_str())])
    }

    /// Closes the store and drops the schema.
    pub async fn drop_schema(self) {
        self.store.close().await;
        let mut admin = PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
    }
}
