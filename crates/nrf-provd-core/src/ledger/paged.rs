//! The read side the HTTP API uses: a bounded set of readers that never
//! share the writer's thread, connection or lock, each reading one page of
//! run ids, then the runs a part at a time. Any ledger that can read its
//! runs this way serves the API ([`RunReaders`]); the SQLite ledger's
//! [`ReaderPool`](super::ReaderPool) is the daemon's.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{LedgerError, RunId, RunRecord};

/// Which runs one page of the API holds (their ids, oldest first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunPage {
    /// Only runs started at or after this.
    pub since: Option<OffsetDateTime>,
    /// A cursor: the first `limit` runs after this id. Without one, the
    /// most recent `limit` runs.
    pub after: Option<RunId>,
    pub limit: usize,
}

/// What a reader makes of the runs it read (an answer's bytes), made where
/// the reader reads, not on the caller's thread.
pub type Render = Box<dyn FnOnce(Vec<RunRecord>) -> Vec<u8> + Send>;

/// A fixed number of readers: at most that many reads at once.
#[async_trait]
pub trait RunReaders: Send + Sync {
    /// A reader if one is idle now; `None` when all are busy (the API
    /// answers 503 rather than queue).
    fn try_reader(&self) -> Option<Box<dyn RunReader>>;

    /// The next reader that becomes idle (the next part of an answer
    /// already under way).
    async fn reader(&self) -> Result<Box<dyn RunReader>, LedgerError>;
}

/// One reader, taken from its [`RunReaders`] until dropped.
#[async_trait]
pub trait RunReader: Send + Sync {
    /// The ids of the runs on `page`, oldest first.
    async fn page(&self, page: RunPage) -> Result<Vec<RunId>, LedgerError>;

    /// The runs with `ids` (oldest first; an id with no run is left out),
    /// handed to `render`; what it makes of them.
    async fn render(&self, ids: Vec<RunId>, render: Render) -> Result<Vec<u8>, LedgerError>;

    /// The latest `limit` shift changes (who, when, old → new), oldest
    /// first. A ledger that keeps no shift history has none to show.
    async fn shift_changes(
        &self,
        _limit: usize,
    ) -> Result<Vec<crate::record::ShiftChange>, LedgerError> {
        Ok(Vec::new())
    }
}
