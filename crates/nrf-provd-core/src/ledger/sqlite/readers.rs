//! The HTTP API's readers: read-only connections, each on a thread of its
//! own, so that a read never takes the writer's thread, connection or
//! lock, nor a thread of tokio's blocking pool. At most `size` reads run
//! at once: [`ReaderPool::try_reader`] says at once when every reader is
//! busy (the API answers 503), [`ReaderPool::reader`] waits for one (the
//! next part of an answer already under way).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{SqliteLedger, SqliteReader, blocking, dbtime, read_selected, sql};
use crate::ledger::paged::{Render, RunPage, RunReader, RunReaders};
use crate::ledger::{LedgerError, RunId};

/// A fixed number of read-only connections.
#[derive(Clone)]
pub struct ReaderPool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<Vec<SqliteReader>>,
    permits: Arc<Semaphore>,
}

/// One reader, taken from the pool until dropped.
pub struct Reader {
    reader: Option<SqliteReader>,
    pool: Arc<Inner>,
    // Released after `drop` has put the reader back.
    _permit: OwnedSemaphorePermit,
}

impl ReaderPool {
    /// `size` read-only connections to the database at `path` (at least
    /// one). Blocking: call it at start-up.
    pub fn open(path: &Path, size: usize) -> Result<ReaderPool, LedgerError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| SqliteLedger::open_read_only(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReaderPool {
            inner: Arc::new(Inner {
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(size)),
            }),
        })
    }
}

#[async_trait]
impl RunReaders for ReaderPool {
    fn try_reader(&self) -> Option<Box<dyn RunReader>> {
        let permit = Arc::clone(&self.inner.permits).try_acquire_owned().ok()?;
        Some(Box::new(self.inner.take(permit)?))
    }

    async fn reader(&self) -> Result<Box<dyn RunReader>, LedgerError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| LedgerError::Task("the readers have been closed".into()))?;
        let reader = self
            .inner
            .take(permit)
            .ok_or_else(|| LedgerError::Task("no reader behind a permit".into()))?;
        Ok(Box::new(reader))
    }
}

impl Inner {
    fn take(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Option<Reader> {
        // A permit means a reader is idle: one per permit.
        let reader = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        Some(Reader {
            reader: Some(reader),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reader);
        }
    }
}

impl Reader {
    fn db(&self) -> Result<&SqliteReader, LedgerError> {
        self.reader
            .as_ref()
            .ok_or_else(|| LedgerError::Task("reader already returned".into()))
    }
}

#[async_trait]
impl RunReader for Reader {
    async fn shift_changes(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::record::ShiftChange>, LedgerError> {
        self.db()?.shift_changes(limit).await
    }

    async fn page(&self, page: RunPage) -> Result<Vec<RunId>, LedgerError> {
        blocking(&self.db()?.db, move |conn| page_ids(conn, &page)).await
    }

    /// `render` runs on the reader's thread: an answer's bytes are made
    /// there too, not on the caller's thread.
    async fn render(&self, ids: Vec<RunId>, render: Render) -> Result<Vec<u8>, LedgerError> {
        blocking(&self.db()?.db, move |conn| {
            let ids = serde_json::to_string(&ids)
                .map_err(|e| LedgerError::InvalidRecord(e.to_string()))?;
            let runs = read_selected(conn, "SELECT value FROM json_each(?1)", params![ids])?;
            Ok(render(runs))
        })
        .await
    }
}

fn page_ids(conn: &Connection, page: &RunPage) -> Result<Vec<RunId>, LedgerError> {
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let since = page.since.map(dbtime::format);
    let query = match page.after {
        Some(_) => {
            "SELECT id FROM runs WHERE id > ?1 AND (?2 IS NULL OR started_at >= ?2)
             ORDER BY id LIMIT ?3"
        }
        None => {
            "SELECT id FROM runs WHERE (?2 IS NULL OR started_at >= ?2)
             ORDER BY id DESC LIMIT ?3"
        }
    };
    let mut stmt = conn.prepare_cached(query).map_err(sql("page of runs"))?;
    let mut ids = stmt
        .query_map(params![page.after, since, limit], |row| {
            row.get::<_, RunId>(0)
        })
        .map_err(sql("page of runs"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("page of runs"))?;
    if page.after.is_none() {
        ids.reverse();
    }
    Ok(ids)
}
