//! The one SQLite file that holds the audit log and the Location Information Service's data:
//! opened and migrated here, for both.

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Every migration in `migrations/` (audit and LIS tables alike), embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for another's write lock (the audit writer, an import) before
/// giving up with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum OpenError {
    /// The file could not be opened or created; the text says why.
    Open(String),
    /// The schema could not be brought up to date.
    Migrate(MigrateError),
}

/// Open (creating it if missing) the SQLite file at `path` and bring its schema up to date.
///
/// The directory must exist: a missing directory usually means a wrong path in the config, and
/// creating it would hide that.
pub async fn open(path: &Path) -> Result<SqlitePool, OpenError> {
    // SQLite says only "unable to open database file" for all of these; say which it is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if path.is_dir() {
        return Err(OpenError::Open("it is a directory".into()));
    }
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(OpenError::Open(format!("{} is not a directory", dir.display()))),
        Ok(_) => {}
        Err(e) => return Err(OpenError::Open(format!("directory {}: {e}", dir.display()))),
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers (history, verify, export, the core's wiremap reload) never block the
        // writer, nor it them.
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit is fsynced before it returns. NORMAL in WAL mode may lose the last
        // commits on power loss, and an acknowledged audit event must not be lost.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        // One writer at a time (SQLite's rule) plus concurrent readers.
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|e| OpenError::Open(e.to_string()))?;
    MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
    Ok(pool)
}
