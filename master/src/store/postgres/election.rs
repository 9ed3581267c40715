//! Leader election and fencing on PostgreSQL, for several masters on one database.
//!
//! - **Election**: a session-level advisory lock, keyed by the schema the pool lives in, held on
//!   a connection of its own. Whoever holds it is the active master; PostgreSQL releases it the
//!   moment that session ends (the process died, or its connection broke), so a standby's next
//!   `pg_try_advisory_lock` wins.
//! - **Fencing**: the winner bumps `leadership.epoch` and remembers its epoch ([`Fence`]). Every
//!   write transaction of a fenced backend first reads the row `FOR SHARE` and refuses to go on
//!   under another epoch. The new leader's bump waits for the transactions that read the old
//!   epoch to end, and every transaction after it sees the new epoch, so a former leader that
//!   has not noticed yet can never commit a change after the takeover.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

use super::convert_pg_err;
use crate::error::MasterError;
use crate::leader::Election;

/// The first half of the advisory lock's key ("explore" in ASCII, folded to 32 bits); the second
/// half is the hash of the pool's schema, so pools in different schemas elect apart.
const LOCK_CLASS: i32 = 0x6578_706c;

/// How often the active master checks that its election session is still alive.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// How long that check may take before the session counts as lost (a silent network).
const SESSION_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The election session's TCP keepalives on the server's side (5 s idle, then 3 probes 2 s
/// apart): when the active master's host vanishes without closing its connection, PostgreSQL
/// ends the session, and so frees the leadership, within about 11 s instead of the system
/// default of about two hours.
const SERVER_KEEPALIVES: [&str; 3] = [
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
];

/// What a backend's write transactions must check before they change anything.
#[derive(Debug)]
pub struct Fence {
    /// [`Fence::FREE`], [`Fence::STANDING_BY`] or the epoch this master leads under.
    epoch: AtomicI64,
}

impl Fence {
    /// Not elected at all (tests, tools): transactions are not checked.
    pub const FREE: i64 = -1;
    /// In an election and not the leader (yet): every write transaction is refused.
    pub const STANDING_BY: i64 = 0;

    /// A fence that checks nothing.
    pub fn free() -> Fence {
        Fence {
            epoch: AtomicI64::new(Fence::FREE),
        }
    }

    /// The current state: [`Fence::FREE`], [`Fence::STANDING_BY`] or an epoch.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn set(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Checks, inside a write transaction, that this master may write: reads the leadership row
    /// `FOR SHARE` (held until the transaction ends, so a takeover waits for it) and compares.
    pub async fn check(&self, conn: &mut PgConnection) -> Result<(), MasterError> {
        let mine = self.epoch();
        if mine == Fence::FREE {
            return Ok(());
        }
        if mine == Fence::STANDING_BY {
            return Err(MasterError::Unavailable(
                "this master is a standby: the active master is another one".into(),
            ));
        }
        let (current, holder): (i64, String) =
            sqlx::query_as("SELECT epoch, holder FROM leadership WHERE id = 1 FOR SHARE")
                .fetch_one(conn)
                .await
                .map_err(convert_pg_err)?;
        if current != mine {
            return Err(MasterError::Unavailable(format!(
                "fenced: master {holder} took over (epoch {current}; this master led epoch {mine})"
            )));
        }
        Ok(())
    }
}

/// The PostgreSQL election: see the module documentation.
pub struct PgElection {
    options: PgConnectOptions,
    /// The session holding (or trying for) the advisory lock.
    session: Mutex<Option<PgConnection>>,
    fence: Arc<Fence>,
    /// This master's name in `leadership.holder`.
    name: String,
}

impl PgElection {
    /// An election over the database `options` reach, fencing the backend that shares `fence`
    /// (which from now on refuses writes until this master wins).
    pub fn new(options: PgConnectOptions, fence: Arc<Fence>, name: &str) -> PgElection {
        fence.set(Fence::STANDING_BY);
        PgElection {
            options,
            session: Mutex::new(None),
            fence,
            name: name.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Election for PgElection {
    async fn try_acquire(&self) -> Result<Option<i64>, MasterError> {
        let mut session = self.session.lock().await;
        if session.is_none() {
            let mut conn = PgConnection::connect_with(&self.options)
                .await
                .map_err(convert_pg_err)?;
            for setting in SERVER_KEEPALIVES {
                sqlx::query(setting)
                    .execute(&mut conn)
                    .await
                    .map_err(convert_pg_err)?;
            }
            *session = Some(conn);
        }
        let conn = session.as_mut().expect("connected above");
        let won: Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                .bind(LOCK_CLASS)
                .fetch_one(&mut *conn)
                .await;
        let won = match won {
            Ok(won) => won,
            Err(e) => {
                // A broken session is replaced on the next try.
                *session = None;
                return Err(convert_pg_err(e));
            }
        };
        if !won {
            return Ok(None);
        }
        let now_ms = crate::scheduler::now_ms();
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE leadership SET epoch = epoch + 1, holder = $1, since_ms = $2 WHERE id = 1
             RETURNING epoch",
        )
        .bind(&self.name)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await
        .map_err(convert_pg_err)?;
        self.fence.set(epoch);
        Ok(Some(epoch))
    }

    async fn lost(&self) -> String {
        loop {
            tokio::time::sleep(SESSION_CHECK).await;
            let mut session = self.session.lock().await;
            let Some(conn) = session.as_mut() else {
                return "the election session is gone".into();
            };
            let check = tokio::time::timeout(
                SESSION_CHECK_TIMEOUT,
                sqlx::query("SELECT 1").execute(&mut *conn),
            )
            .await;
            let failure = match check {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {SESSION_CHECK_TIMEOUT:?}"),
            };
            *session = None;
            self.fence.set(Fence::STANDING_BY);
            return format!("the database session holding the leadership ended: {failure}");
        }
    }

    async fn holder(&self) -> Option<String> {
        let mut session = self.session.lock().await;
        let conn = session.as_mut()?;
        sqlx::query_scalar("SELECT holder FROM leadership WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .ok()
    }
}
