//! Which master is the active one. With SQLite there is only ever one (the data directory's
//! lock, [`crate::lock`], refuses a second), so it is active from the start ([`Sole`]). With
//! PostgreSQL several masters may share one database: each asks the database's [`Election`]
//! (`store/postgres/election.rs`: an advisory lock plus a fencing epoch) and only the winner
//! runs the scheduler; the others are hot standbys that answer `UNAVAILABLE`, report not-ready,
//! and ask again every [`STANDBY_POLL`] until the active one is gone. A master that loses the
//! leadership it held stops serving (the process exits; its orchestrator restarts it as a
//! standby), and the fencing epoch makes sure none of its transactions commits afterwards.

use std::time::Duration;

use crate::error::MasterError;

/// How often a standby asks whether it can take over.
pub const STANDBY_POLL: Duration = Duration::from_millis(500);

/// How a master becomes, and stays, the active one.
#[async_trait::async_trait]
pub trait Election: Send + Sync {
    /// Tries once to become the active master: `Some(epoch)` (the fencing epoch, larger than
    /// every earlier leader's) when it did, `None` while another master is active.
    async fn try_acquire(&self) -> Result<Option<i64>, MasterError>;

    /// Resolves, with the reason, once the leadership this master held is lost (its database
    /// session ended). Never resolves for a master that cannot lose it.
    async fn lost(&self) -> String;

    /// Who holds the leadership now, as the database records it (for a standby's messages).
    async fn holder(&self) -> Option<String>;
}

/// The only master there can be (SQLite: the data directory lock already guarantees it).
#[derive(Debug, Default)]
pub struct Sole;

#[async_trait::async_trait]
impl Election for Sole {
    async fn try_acquire(&self) -> Result<Option<i64>, MasterError> {
        Ok(Some(1))
    }

    async fn lost(&self) -> String {
        std::future::pending().await
    }

    async fn holder(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sole_master_is_active_at_once_and_never_loses_it() {
        let sole = Sole;
        assert_eq!(sole.try_acquire().await.unwrap(), Some(1));
        let lost = tokio::time::timeout(Duration::from_millis(50), sole.lost()).await;
        assert!(lost.is_err(), "the sole master cannot lose its leadership");
    }
}
