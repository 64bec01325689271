//! One owner per connection: a thread of its own that runs the jobs sent to
//! it, one at a time, in order. The station's commits run on the writer's
//! thread and nowhere else: not in tokio's blocking pool, which anything in
//! the process can fill, and never behind a reader (readers have threads
//! and connections of their own, [`super::readers`]).

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use nix::fcntl::Flock;
use rusqlite::Connection;

use super::LedgerError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A connection on its thread, and what was learned opening it.
pub(super) struct Db {
    pub path: PathBuf,
    pub recovered: usize,
    /// Damage the background integrity check found: from then on every
    /// job fails with [`LedgerError::Damaged`] (the station pauses).
    pub damage: Arc<OnceLock<String>>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Db {
    /// Give `conn` to a new thread called `name`. `lock` (the database's
    /// writer lock, if any) is released only after the connection has
    /// closed.
    pub fn start(
        name: &str,
        conn: Connection,
        lock: Option<Flock<File>>,
        path: &Path,
        recovered: usize,
    ) -> Result<Db, LedgerError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut conn = conn;
                for job in queue {
                    // A job that panics loses its answer (its caller gets
                    // `LedgerError::Task`); the connection goes on, since
                    // unwinding dropped (rolled back) any open transaction.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
                drop(conn);
                if let Some(lock) = &lock {
                    super::integrity::mark_closed(lock);
                }
                drop(lock);
            })
            .map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                action: "cannot start the database's thread",
                source,
            })?;
        Ok(Db {
            path: path.to_owned(),
            recovered,
            damage: Arc::default(),
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }
}

impl Drop for Db {
    /// Close the connection (its thread ends once its queue is empty) and
    /// wait for it, so that the database is closed and unlocked when the
    /// last handle is gone, as the caller expects.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Run `job` on the connection's thread and wait for its answer (without
/// blocking the caller's runtime).
pub(super) async fn blocking<R, F>(db: &Arc<Db>, job: F) -> Result<R, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<R, LedgerError> + Send + 'static,
{
    if let Some(detail) = db.damage.get() {
        return Err(LedgerError::Damaged {
            path: db.path.clone(),
            detail: detail.clone(),
        });
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let _ = answer.send(job(conn));
    });
    db.jobs
        .as_ref()
        .and_then(|jobs| jobs.send(job).ok())
        .ok_or_else(|| LedgerError::Task("the database's thread has stopped".into()))?;
    answered
        .await
        .map_err(|_| LedgerError::Task("a database job panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_db() -> Arc<Db> {
        let conn = Connection::open_in_memory().expect("in-memory database");
        Arc::new(Db::start("test-db", conn, None, Path::new(":memory:"), 0).expect("thread"))
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_of_their_own() {
        let db = memory_db();
        let caller = std::thread::current().id();
        let first = blocking(&db, |_| Ok(std::thread::current().id()))
            .await
            .expect("job");
        let second = blocking(&db, |_| Ok(std::thread::current().id()))
            .await
            .expect("job");
        assert_ne!(first, caller);
        assert_eq!(first, second, "the same thread owns the connection");
        let name = blocking(&db, |_| {
            Ok(std::thread::current().name().map(str::to_string))
        })
        .await
        .expect("job");
        assert_eq!(name.as_deref(), Some("test-db"));
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone() {
        let db = memory_db();
        blocking(&db, |conn| {
            conn.execute_batch("CREATE TABLE t (x INTEGER)")
                .map_err(|e| LedgerError::Task(e.to_string()))
        })
        .await
        .expect("create");
        let panicked = blocking(&db, |conn| -> Result<(), LedgerError> {
            let tx = conn.transaction().expect("transaction");
            tx.execute("INSERT INTO t VALUES (1)", []).expect("insert");
            panic!("a job's bug");
        })
        .await;
        assert!(
            matches!(panicked, Err(LedgerError::Task(_))),
            "{panicked:?}"
        );
        // The connection still works, and the panicking job's transaction
        // was rolled back.
        let rows: i64 = blocking(&db, |conn| {
            conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .map_err(|e| LedgerError::Task(e.to_string()))
        })
        .await
        .expect("count");
        assert_eq!(rows, 0);
    }
}
