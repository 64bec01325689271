//! One owner per connection: a thread of its own that runs the jobs sent to
//! it, in order. The station's commits run on the writer's thread and
//! nowhere else: not in tokio's blocking pool, which anything in the process
//! can fill, and never behind a reader (readers have threads and connections
//! of their own, [`super::readers`]).
//!
//! **Group commit.** Under `synchronous=FULL` every commit is an fsync, and
//! boards replugged together reach each step together: at 256 boards a
//! claim waited behind up to 255 fsyncs (issue 25). A job sent with
//! [`grouped`] runs inside a transaction the writer owns, together with the
//! grouped jobs queued behind it (each in a savepoint of its own, so one
//! job's failure rolls back only its own writes); the group commits once,
//! and each caller is answered only after that commit is on disk — what a
//! caller learns is as durable as before, one fsync now serves many.
//!
//! **One fsync a run.** A run's start, its claims and its bindings are
//! sent [`grouped_deferred`]: their group commits without waiting for the
//! disk (`synchronous=NORMAL` for that commit, WAL order kept), and they
//! become durable with the next durable commit of any job — at the latest
//! the run's own finish, whose fsync covers every frame before it. A
//! process that dies keeps them all (the WAL is in the kernel's cache); a
//! power cut in mid-run can lose that run's start and claims, and with them
//! the run itself, which then never shows as interrupted. Nothing anyone
//! was told of is lost: no pass is reported before the finish commits, a
//! claim guards a token that also answered this run's own random challenge
//! (never issued again), and a line's central claims are PostgreSQL's.
//!
//! **Checkpoints off the commit path.** SQLite checkpoints the WAL on the
//! committing connection when it passes 1,000 pages: every few hundred
//! commits one of them also wrote and synced pages all over the database
//! file (the commit p99 at 10^6 runs was 5.8× an empty database's, issue 23).
//! The writer's own checkpoint is now only a backstop far above that; a
//! checkpointer thread with a connection of its own checkpoints instead
//! ([`Checkpointer`]).

use std::cell::Cell;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::Flock;
use rusqlite::Connection;

use super::LedgerError;

type AloneJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    /// Runs by itself, opening its own transaction if it wants one.
    Alone(AloneJob),
    /// Runs inside the writer's transaction, with whatever grouped jobs are
    /// queued beside it.
    Grouped(Box<dyn GroupedJob>),
}

/// At most this many jobs share one commit: a bound on how long the first
/// of them waits for the last.
const GROUP_MAX: usize = 64;

/// A job of a group: run inside the open transaction, answered after the
/// group's commit.
trait GroupedJob: Send {
    /// Whether its caller must hear of it only once it is on disk (else
    /// it is durable with the next commit that is).
    fn durable(&self) -> bool;
    /// Do the job's work; false when it failed (the writer then rolls back
    /// its savepoint).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller: its own result when `committed` is `Ok`, else the
    /// error that kept the group from committing.
    fn answer(self: Box<Self>, committed: Result<(), LedgerError>);
}

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
    /// closed. `checkpointer`, if given, is told after each commit and
    /// stopped before the connection closes.
    pub fn start(
        name: &str,
        conn: Connection,
        lock: Option<Flock<File>>,
        checkpointer: Option<Checkpointer>,
        path: &Path,
        recovered: usize,
    ) -> Result<Db, LedgerError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut conn = conn;
                serve(&mut conn, &queue, checkpointer.as_ref());
                // The checkpointer's connection closes first, so that the
                // writer's is the last: SQLite then checkpoints and removes
                // the WAL as the database closes.
                drop(checkpointer);
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

    fn send(&self, job: Job) -> Result<(), LedgerError> {
        if let Some(detail) = self.damage.get() {
            return Err(LedgerError::Damaged {
                path: self.path.clone(),
                detail: detail.clone(),
            });
        }
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| LedgerError::Task("the database's thread has stopped".into()))
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

/// The writer's loop: jobs in the order sent; grouped jobs queued together
/// share one transaction.
fn serve(conn: &mut Connection, queue: &mpsc::Receiver<Job>, checkpointer: Option<&Checkpointer>) {
    let mut sync = Synchronous::of(conn);
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| queue.recv().ok()) else {
            return;
        };
        let jobs = match job {
            Job::Alone(job) => {
                // A job alone cannot be answered from here; should the
                // raise fail (out of memory), it commits as the last group did.
                sync.set(conn, true);
                // A job that panics loses its answer (its caller gets
                // `LedgerError::Task`); the connection goes on, since
                // unwinding dropped (rolled back) any open transaction.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(conn)));
                1
            }
            Job::Grouped(first) => {
                let mut group = vec![first];
                while group.len() < GROUP_MAX {
                    match queue.try_recv() {
                        Ok(Job::Grouped(job)) => group.push(job),
                        // Order is kept: an alone job runs after the group
                        // sent before it.
                        Ok(alone) => {
                            next = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let jobs = group.len();
                let durable = group.iter().any(|job| job.durable());
                if sync.set(conn, durable) {
                    commit_group(conn, group);
                } else {
                    // Never tell a caller a commit is on disk that was not
                    // made to wait for it: a transient failure, retried.
                    for job in group {
                        job.answer(Err(LedgerError::Task(
                            "the commit could not be made durable".into(),
                        )));
                    }
                }
                jobs
            }
        };
        if let Some(checkpointer) = checkpointer {
            checkpointer.committed(jobs);
        }
    }
}

/// The connection's `synchronous` setting: as opened for durable work,
/// `NORMAL` for a group of deferred jobs.
struct Synchronous {
    /// The level the connection was opened with (2 = FULL).
    durable: i64,
    now: i64,
}

/// `synchronous=NORMAL`: in WAL mode a commit that waits for no fsync.
const NORMAL: i64 = 1;

thread_local! {
    /// Whether the writer's next commit waits for the disk (the counting
    /// hook in [`super::work`] reads it on this thread).
    static COMMIT_DURABLE: Cell<bool> = const { Cell::new(true) };
}

/// Whether the commit being made on this thread waits for the disk.
pub(super) fn commit_is_durable() -> bool {
    COMMIT_DURABLE.with(Cell::get)
}

impl Synchronous {
    fn of(conn: &Connection) -> Synchronous {
        let durable = conn
            .pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
            .unwrap_or(2);
        Synchronous {
            durable,
            now: durable,
        }
    }

    /// Make the next commit durable, or let it wait for a later one (a
    /// connection opened at NORMAL or below stays as it is). False when a
    /// durable commit was asked for and the setting could not be raised
    /// (SQLite out of memory); the next call tries again.
    fn set(&mut self, conn: &Connection, durable: bool) -> bool {
        let want = match durable {
            true => self.durable,
            false => self.durable.min(NORMAL),
        };
        if want != self.now {
            let sql = match want {
                0 => "PRAGMA synchronous = OFF",
                1 => "PRAGMA synchronous = NORMAL",
                2 => "PRAGMA synchronous = FULL",
                _ => "PRAGMA synchronous = EXTRA",
            };
            if exec(conn, sql).is_ok() {
                self.now = want;
            }
        }
        COMMIT_DURABLE.with(|c| c.set(self.now > NORMAL));
        // Lowering may fail harmlessly: the commit is then more durable.
        self.now >= want
    }
}

/// Run `group` in one transaction and answer each job once it committed.
fn commit_group(conn: &Connection, group: Vec<Box<dyn GroupedJob>>) {
    let mut queued = group.into_iter();
    // Usually one pass; another only when a job's failure ended the whole
    // transaction (SQLite rolls back everything on some I/O errors).
    loop {
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            for job in queued {
                job.answer(Err(shared(&e, "begin a transaction")));
            }
            return;
        }
        let mut ran = Vec::new();
        let mut ended_by = None;
        for mut job in queued.by_ref() {
            if let Err(e) = exec(conn, "SAVEPOINT job") {
                job.answer(Err(shared(&e, "savepoint")));
                continue;
            }
            let ok = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(conn))).unwrap_or(false);
            if conn.is_autocommit() {
                ended_by = Some((job, ok));
                break;
            }
            let undo = || exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"));
            let ended = if ok {
                exec(conn, "RELEASE job")
            } else {
                undo()
            };
            if let Err(e) = ended {
                // Never answer success, and take its writes back if SQLite
                // still can, so that none stands that its caller was told
                // failed.
                let _ = undo();
                job.answer(Err(shared(&e, "end of a job's savepoint")));
                continue;
            }
            ran.push(job);
        }
        let Some((failed, ok)) = ended_by else {
            let committed = exec(conn, "COMMIT");
            if committed.is_err() && !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            for job in ran {
                job.answer(committed.as_ref().map_err(|e| shared(e, "commit")).copied());
            }
            return;
        };
        // The transaction is gone, and with it the writes of every job that
        // ran before the failing one: theirs is a transient failure (the
        // station retries or keeps the record), the failing job's its own.
        failed.answer(if ok {
            Err(LedgerError::Task(
                "a job ended the writer's transaction".into(),
            ))
        } else {
            Ok(())
        });
        for job in ran {
            job.answer(Err(LedgerError::Task(
                "rolled back with a failed job of the same commit".into(),
            )));
        }
    }
}

/// Run one statement, kept prepared: the writer runs these for every
/// group, and compiling each anew cost more than the statement.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// `e` for one more caller of a group (rusqlite's error is not `Clone`;
/// its SQLite code, which says whether waiting may clear it, is kept).
fn shared(e: &rusqlite::Error, context: &'static str) -> LedgerError {
    let source = match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => return LedgerError::Task(format!("{context}: {other}")),
    };
    LedgerError::Sqlite { context, source }
}

/// A job of [`grouped_then`]: its work, its result, and who waits for it.
struct Pending<R, F, A> {
    durable: bool,
    work: Option<F>,
    after: Option<A>,
    result: Option<Result<R, LedgerError>>,
    answer: Option<tokio::sync::oneshot::Sender<Result<R, LedgerError>>>,
}

impl<R, F, A> GroupedJob for Pending<R, F, A>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, LedgerError> + Send,
    A: FnOnce(&Result<R, LedgerError>) + Send,
{
    fn durable(&self) -> bool {
        self.durable
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(mut self: Box<Self>, committed: Result<(), LedgerError>) {
        let result = match (committed, self.result.take()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(LedgerError::Task("a database job panicked".into())),
        };
        if let Some(after) = self.after.take() {
            after(&result);
        }
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(result);
        }
    }
}

/// Run `job` on the connection's thread and wait for its answer (without
/// blocking the caller's runtime). The job runs alone: it opens its own
/// transaction if it wants one.
pub(super) async fn blocking<R, F>(db: &Arc<Db>, job: F) -> Result<R, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<R, LedgerError> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    db.send(Job::Alone(Box::new(move |conn| {
        let _ = answer.send(job(conn));
    })))?;
    answered
        .await
        .map_err(|_| LedgerError::Task("a database job panicked".into()))?
}

/// Run `work` inside the writer's transaction, committed together with the
/// other grouped jobs queued beside it; answered once that commit is on
/// disk. `work` must not open a transaction of its own.
pub(super) async fn grouped<R, F>(db: &Arc<Db>, work: F) -> Result<R, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, LedgerError> + Send + 'static,
{
    grouped_then(db, work, |_| ()).await
}

/// [`grouped`], answered once the group committed but without waiting for
/// the disk: durable with the next durable commit (see "One fsync a run").
/// For what a power cut may take back together with the run it belongs to.
pub(super) async fn grouped_deferred<R, F>(db: &Arc<Db>, work: F) -> Result<R, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, LedgerError> + Send + 'static,
{
    queue_grouped(db, work, |_| (), false)?
        .await
        .map_err(|_| LedgerError::Task("a database job panicked".into()))?
}

/// [`grouped`], then `after` on the writer's thread with the final result
/// (committed or not) before the caller hears it.
pub(super) async fn grouped_then<R, F, A>(db: &Arc<Db>, work: F, after: A) -> Result<R, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, LedgerError> + Send + 'static,
    A: FnOnce(&Result<R, LedgerError>) + Send + 'static,
{
    queue_grouped(db, work, after, true)?
        .await
        .map_err(|_| LedgerError::Task("a database job panicked".into()))?
}

type Answer<R> = tokio::sync::oneshot::Receiver<Result<R, LedgerError>>;

/// Queue a grouped job now; its answer comes on the returned receiver.
fn queue_grouped<R, F, A>(
    db: &Db,
    work: F,
    after: A,
    durable: bool,
) -> Result<Answer<R>, LedgerError>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, LedgerError> + Send + 'static,
    A: FnOnce(&Result<R, LedgerError>) + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    db.send(Job::Grouped(Box::new(Pending {
        durable,
        work: Some(work),
        after: Some(after),
        result: None,
        answer: Some(answer),
    })))?;
    Ok(answered)
}

/// Checkpoints the WAL on a thread and connection of its own, so that no
/// commit of the station's waits for one: after [`CHECKPOINT_AFTER_JOBS`]
/// jobs (each writes a few pages: about SQLite's own 1,000-page interval),
/// or once the writer has been quiet for [`CHECKPOINT_WHEN_QUIET`] (a
/// checkpoint is two fsyncs: on a station taking a board a second, one per
/// run would cost more than the commits it relieves).
pub(super) struct Checkpointer {
    jobs: Arc<AtomicUsize>,
    due: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

const CHECKPOINT_AFTER_JOBS: usize = 250;
const CHECKPOINT_WHEN_QUIET: Duration = Duration::from_secs(30);

/// The writer's own checkpoint, a backstop should the checkpointer fall
/// behind (a reader holding an old snapshot): 16,384 pages, 64 MiB of WAL.
pub(super) const WRITER_AUTOCHECKPOINT: i64 = 16_384;

impl Checkpointer {
    /// Start checkpointing through `conn` (a read-write connection of the
    /// writer's database).
    pub fn start(conn: Connection, path: &Path) -> Result<Checkpointer, LedgerError> {
        let (due, told) = mpsc::sync_channel::<()>(1);
        let jobs = Arc::new(AtomicUsize::new(0));
        let owed = Arc::clone(&jobs);
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || checkpoint_when_due(&conn, &told, &owed))
            .map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                action: "cannot start the checkpointer's thread",
                source,
            })?;
        Ok(Checkpointer {
            jobs,
            due: Some(due),
            thread: Some(thread),
        })
    }

    /// `jobs` more jobs were committed (never blocks).
    fn committed(&self, jobs: usize) {
        let owed = self.jobs.fetch_add(jobs, Ordering::Relaxed) + jobs;
        if owed >= CHECKPOINT_AFTER_JOBS
            && let Some(due) = &self.due
        {
            let _ = due.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.due.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_when_due(conn: &Connection, due: &mpsc::Receiver<()>, jobs: &AtomicUsize) {
    loop {
        match due.recv_timeout(CHECKPOINT_WHEN_QUIET) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) if jobs.load(Ordering::Relaxed) > 0 => {}
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        jobs.store(0, Ordering::Relaxed);
        // PASSIVE: copies what it can without waiting for, or blocking, the
        // writer or any reader; what a reader still needs waits for the
        // next turn.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint: will try again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_db() -> Arc<Db> {
        let conn = Connection::open_in_memory().expect("in-memory database");
        Arc::new(Db::start("test-db", conn, None, None, Path::new(":memory:"), 0).expect("thread"))
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

    fn sql_error(e: rusqlite::Error) -> LedgerError {
        LedgerError::Task(e.to_string())
    }

    /// A database with a table `t`, whose commits are counted, and a way to
    /// hold its writer until a group has queued behind it.
    async fn counted_db() -> (Arc<Db>, Arc<std::sync::atomic::AtomicUsize>) {
        let db = memory_db();
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&commits);
        blocking(&db, move |conn| {
            conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
                .map_err(sql_error)?;
            conn.commit_hook(Some(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                false
            }));
            Ok(())
        })
        .await
        .expect("setup");
        (db, commits)
    }

    /// Hold the writer's thread until the returned sender is dropped.
    async fn hold_writer(db: &Arc<Db>) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        db.send(Job::Alone(Box::new(move |_| {
            let _ = started.send(());
            let _ = held.recv();
        })))
        .expect("send");
        running.await.expect("the writer took the holding job");
        release
    }

    fn insert(db: &Arc<Db>, x: i64) -> Answer<i64> {
        queue(db, move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map_err(sql_error)?;
            Ok(x)
        })
    }

    fn queue<F>(db: &Arc<Db>, work: F) -> Answer<i64>
    where
        F: FnOnce(&Connection) -> Result<i64, LedgerError> + Send + 'static,
    {
        queue_grouped(db, work, |_| (), true).expect("queued")
    }

    async fn answers(queued: Vec<Answer<i64>>) -> Vec<Result<i64, LedgerError>> {
        let mut answers = Vec::new();
        for answer in queued {
            answers.push(answer.await.expect("answered"));
        }
        answers
    }

    async fn rows(db: &Arc<Db>) -> Vec<i64> {
        blocking(db, |conn| {
            let mut rows = conn
                .prepare("SELECT x FROM t ORDER BY x")
                .map_err(sql_error)?;
            let rows = rows
                .query_map([], |row| row.get(0))
                .map_err(sql_error)?
                .collect::<Result<Vec<i64>, _>>()
                .map_err(sql_error)?;
            Ok(rows)
        })
        .await
        .expect("rows")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_queued_together_share_one_commit_and_a_failed_one_loses_only_its_own_writes() {
        let (db, commits) = counted_db().await;
        let before = commits.load(std::sync::atomic::Ordering::SeqCst);
        let release = hold_writer(&db).await;
        // 1 and 3 twice: the second insert of each breaks the primary key.
        let queued: Vec<_> = [1, 2, 3, 1, 4, 3, 5]
            .into_iter()
            .map(|x| insert(&db, x))
            .collect();
        drop(release);
        let answers = answers(queued).await;
        let ok: Vec<bool> = answers.iter().map(Result::is_ok).collect();
        assert_eq!(
            ok,
            [true, true, true, false, true, false, true],
            "{answers:?}"
        );
        assert_eq!(rows(&db).await, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            commits.load(std::sync::atomic::Ordering::SeqCst) - before,
            1,
            "seven jobs queued together commit once"
        );
    }

    /// A group of deferred jobs commits without waiting for the disk; a
    /// group with one durable job in it waits, and so does a job alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_group_of_deferred_jobs_commits_without_an_fsync() {
        let (db, _) = counted_db().await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hooked = Arc::clone(&seen);
        blocking(&db, move |conn| {
            conn.commit_hook(Some(move || {
                hooked.lock().expect("seen").push(commit_is_durable());
                false
            }));
            Ok(())
        })
        .await
        .expect("hook");
        let deferred = |x: i64| {
            queue_grouped(
                &db,
                move |conn: &Connection| {
                    conn.execute("INSERT INTO t VALUES (?1)", [x])
                        .map_err(sql_error)?;
                    Ok(x)
                },
                |_| (),
                false,
            )
            .expect("queued")
        };
        deferred(1)
            .await
            .expect("answered")
            .expect("deferred alone");
        let release = hold_writer(&db).await;
        let together = vec![deferred(2), insert(&db, 3), deferred(4)];
        drop(release);
        answers_of(together).await;
        let level = blocking(&db, |conn| {
            conn.execute("INSERT INTO t VALUES (5)", [])
                .map_err(sql_error)?;
            conn.pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
                .map_err(sql_error)
        })
        .await
        .expect("alone");
        assert_eq!(
            *seen.lock().expect("seen"),
            [false, true, true],
            "deferred alone, a group with a durable job, a job alone"
        );
        assert_eq!(level, 2, "a job alone runs at the connection's own FULL");
        assert_eq!(rows(&db).await, vec![1, 2, 3, 4, 5]);
    }

    async fn answers_of<R: std::fmt::Debug>(queued: Vec<Answer<R>>) {
        for answer in queued {
            answer.await.expect("answered").expect("committed");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_that_cannot_commit_answers_every_job_with_the_error_and_keeps_none_of_it() {
        let (db, _) = counted_db().await;
        // From now on every commit is turned into a rollback.
        blocking(&db, |conn| {
            conn.commit_hook(Some(|| true));
            Ok(())
        })
        .await
        .expect("hook");
        let release = hold_writer(&db).await;
        let queued: Vec<_> = (1..=4).map(|x| insert(&db, x)).collect();
        drop(release);
        for answer in answers(queued).await {
            assert!(
                matches!(
                    answer,
                    Err(LedgerError::Sqlite {
                        context: "commit",
                        ..
                    })
                ),
                "{answer:?}"
            );
        }
        blocking(&db, |conn| {
            conn.commit_hook(None::<fn() -> bool>);
            Ok(())
        })
        .await
        .expect("unhook");
        assert!(rows(&db).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_ends_the_transaction_fails_the_jobs_before_it_and_not_those_after() {
        let (db, _) = counted_db().await;
        let release = hold_writer(&db).await;
        let mut queued: Vec<_> = (1..=2).map(|x| insert(&db, x)).collect();
        // As SQLite does on some I/O errors: the whole transaction is gone.
        queued.push(queue(&db, |conn| {
            conn.execute_batch("ROLLBACK").map_err(sql_error)?;
            Err(LedgerError::Task("disk I/O error".into()))
        }));
        queued.extend((3..=4).map(|x| insert(&db, x)));
        drop(release);
        let answers = answers(queued).await;
        assert!(
            answers[0].as_ref().is_err_and(LedgerError::is_transient),
            "{answers:?}"
        );
        assert!(
            answers[1].as_ref().is_err_and(LedgerError::is_transient),
            "{answers:?}"
        );
        assert!(
            matches!(&answers[2], Err(LedgerError::Task(m)) if m == "disk I/O error"),
            "{answers:?}"
        );
        assert_eq!(answers[3].as_ref().ok(), Some(&3));
        assert_eq!(answers[4].as_ref().ok(), Some(&4));
        assert_eq!(
            rows(&db).await,
            vec![3, 4],
            "nobody was told 1 or 2 were written"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grouped_job_that_panics_fails_alone() {
        let (db, _) = counted_db().await;
        let release = hold_writer(&db).await;
        let queued = vec![
            insert(&db, 1),
            queue(&db, |conn| {
                conn.execute("INSERT INTO t VALUES (2)", [])
                    .expect("insert");
                panic!("a job's bug");
            }),
            insert(&db, 3),
        ];
        drop(release);
        let answers = answers(queued).await;
        assert!(
            matches!(answers[1], Err(LedgerError::Task(_))),
            "{answers:?}"
        );
        assert_eq!(answers[0].as_ref().ok(), Some(&1));
        assert_eq!(answers[2].as_ref().ok(), Some(&3));
        assert_eq!(rows(&db).await, vec![1, 3]);
    }

    /// The WAL-index header (SQLite's file format, "WAL-Index Format"):
    /// `mxFrame` (the last valid frame) at byte 16 and `nBackfill` (frames
    /// copied into the database) at byte 96, native byte order.
    fn wal_frames(shm: &Path) -> (u32, u32) {
        let index = std::fs::read(shm).expect("read -shm");
        let at = |offset: usize| {
            u32::from_ne_bytes(index[offset..offset + 4].try_into().expect("4 bytes"))
        };
        (at(16), at(96))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_copies_the_wal_into_the_database_without_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let open = || {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "journal_mode", "WAL")
                .expect("wal");
            conn
        };
        let conn = open();
        // The writer never checkpoints by itself here.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("autocheckpoint");
        let checkpointer = Checkpointer::start(open(), &path).expect("checkpointer");
        let db =
            Arc::new(Db::start("test-db", conn, None, Some(checkpointer), &path, 0).expect("db"));
        blocking(&db, |conn| {
            conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY, pad BLOB)")
                .map_err(sql_error)
        })
        .await
        .expect("create");
        for x in 0..CHECKPOINT_AFTER_JOBS {
            grouped(&db, move |conn| {
                conn.execute("INSERT INTO t VALUES (?1, zeroblob(4000))", [x as i64])
                    .map_err(sql_error)
            })
            .await
            .expect("insert");
        }
        let shm = dir.path().join("t.db-shm");
        let (written, _) = wal_frames(&shm);
        assert!(
            written >= 50,
            "the WAL holds the commits ({written} frames)"
        );
        // Polled, not timed: the checkpointer runs on its own thread.
        let mut copied = 0;
        for _ in 0..200 {
            copied = wal_frames(&shm).1;
            if copied > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            copied > 0,
            "the checkpointer copied the WAL into the database"
        );
        drop(db);
        assert!(
            !dir.path().join("t.db-wal").exists(),
            "the writer's connection closes last and removes the WAL"
        );
    }
}
