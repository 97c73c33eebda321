//! The one database that holds the audit log and the Location Information Service's data:
//! a SQLite file (the default) or a PostgreSQL database shared by several core nodes (issue 14).
//! Opened and migrated here, for both stores.
//!
//! Why sqlx's `Any` driver rather than an enum over a `SqlitePool` and a `PgPool`: with `Any`
//! every query, row decoder and transaction is written once (`AnyPool`, `AnyConnection`,
//! `AnyRow`); an enum would need each function written twice, or generic over sqlx's
//! `Database` with a wall of `Encode`/`Decode`/`Executor` bounds. What `Any` is in sqlx 0.8.6
//! (docs.rs `sqlx::any`, and its source): a runtime-chosen driver (`install_default_drivers`)
//! that passes the SQL text to the backend as written, binds and decodes the types it knows —
//! bool, integers, floats, text, blobs: all sosdesk stores — and runs the connected backend's
//! own `Migrate` for `Migrator::run`. It costs little: measured in release, the audit writer
//! (20,000 events) and a 1,000,000-row wiremap import run as fast as through `SqlitePool`
//! (BENCHMARKS.md's "Audit writer" and "LIS import" tests). Left to sosdesk, in this module:
//!
//! - Placeholders: SQLite takes `?`, PostgreSQL `$1, $2 …`. The statements are written with
//!   `?` (the SQLite text stays exactly as it was) and [`Backend::sql`] numbers them for
//!   PostgreSQL.
//! - The few SQLite-only constructs (`json_each`, `json_group_array`, `BEGIN IMMEDIATE`,
//!   `PRAGMA`) have a PostgreSQL equivalent chosen by [`Backend`] where they are used.
//! - Connection settings: `AnyConnectOptions` is only ever parsed from a URL, which cannot
//!   carry SQLite's PRAGMAs, so each SQLite connection sets them after it connects.
//! - Types: `Any` decodes a PostgreSQL BIGINT only as an integer, not as a bool, so every
//!   integer column is BIGINT on PostgreSQL (SQLite's INTEGER is 64-bit) and every value is
//!   bound and read as `i64` on both.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::Executor;
use sqlx::{AnyConnection, AnyPool};

/// The SQLite schema: `migrations/sqlite/`, embedded at build time. These files are the ones
/// sosdesk always had (moved, unchanged, so their checksums still match the ones recorded in
/// existing stores).
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The same schema for PostgreSQL: `migrations/postgres/`.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a connection waits for another's write lock (the audit writer, an import) before
/// giving up with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a PostgreSQL store waits for the server, and a query for a free
/// connection of the pool.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every PostgreSQL session of a node is set to (the pool's connections, the node name's
/// claim): the server, not the node, bounds what a node that dies or is cut off from the
/// network in the middle of a transaction can hold up. Without these a node cut off while it
/// holds the audit chain's table lock stalls every other node's audit writes until the
/// server's TCP stack gives the connection up (hours, with the kernel's keepalive defaults).
/// PostgreSQL manual, "Client Connection Defaults" and "Connection Settings":
///
/// - `idle_in_transaction_session_timeout`: a session idle inside a transaction (its client
///   gone quiet between two statements) is ended and its locks released. sosdesk's own
///   transactions never wait on anything but the database between statements.
/// - `tcp_user_timeout`: data the server sent that the client has not acknowledged within this
///   time (the client is gone while a statement answers) ends the connection.
/// - `tcp_keepalives_*`: an idle connection to a machine that is gone is noticed within
///   idle + interval × count seconds.
///
/// No `lock_timeout` or `statement_timeout`: the audit writer waits for the chain's lock for
/// as long as another node holds it legitimately, and an import may take minutes; what bounds
/// the wait is that the holder cannot be a dead session for longer than the above. (The
/// writer retries a failed write until it commits: `audit::writer`.)
pub const PG_SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '15s'; \
     SET tcp_user_timeout = 10000; SET tcp_keepalives_idle = 5; \
     SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";

/// Where the store is: `[store] path` / `url = "sqlite:PATH"`, or `url = "postgres://…"`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

/// A `postgres://USER:PASS@HOST[:PORT]/DB` URL. Shown (Display, Debug, errors, logs, the
/// audit) without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
    shown: String,
}

impl PgUrl {
    /// The URL with its password, for connecting only.
    fn secret(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl Location {
    /// Parses `[store] url`. The error never contains the password.
    pub fn parse_url(text: &str) -> Result<Location, String> {
        if let Some(path) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("sqlite: names no file".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err("must start with postgres://, postgresql:// or sqlite:".into());
        }
        // url::Url's errors do not quote the input, so the password cannot leak through them.
        let mut url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("names no host: postgres://USER:PASS@HOST[:PORT]/DB".into());
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err("names no database: postgres://USER:PASS@HOST[:PORT]/DB".into());
        }
        // Checked by sqlx's own parser too (unknown parameters, bad port…), so a bad URL is
        // refused by check-config rather than at the first connection.
        text.parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| redact(&e.to_string(), text))?;
        let _ = url.set_password(None);
        Ok(Location::Postgres(PgUrl { url: text.to_string(), shown: url.to_string() }))
    }

    /// The SQLite file, if the store is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => write!(f, "{u}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Location::Postgres(u) => write!(f, "Postgres({u})"),
        }
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Sqlite(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Sqlite(p.clone())
    }
}

/// `text` with the password of the URL `url` replaced, should `text` quote it.
fn redact(text: &str, url: &str) -> String {
    match url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string)) {
        Some(p) if !p.is_empty() => text.replace(&p, "****"),
        _ => text.to_string(),
    }
}

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sql` (written with SQLite's `?` placeholders) as this backend takes it: unchanged for
    /// SQLite, with `$1, $2 …` for PostgreSQL. `?` inside a quoted literal is left alone.
    pub fn sql<'a>(self, sql: &'a str) -> Cow<'a, str> {
        if self == Backend::Sqlite || !sql.contains('?') {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let (mut n, mut quoted) = (0, false);
        for c in sql.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    out.push(c);
                }
                '?' if !quoted => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            }
        }
        Cow::Owned(out)
    }

    /// The statement that starts a write transaction that the other writers of `table` wait
    /// for: SQLite's `BEGIN IMMEDIATE` takes the database's write lock at once. PostgreSQL
    /// has no such BEGIN; [`Db::begin_write`] takes a table lock instead.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

/// An open store: the pool, its dialect and where it is.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    pub location: Arc<Location>,
}

#[derive(Debug)]
pub enum OpenError {
    /// The store could not be opened or created, or the server not reached; the text says why
    /// (never with the password).
    Open(String),
    /// The schema could not be brought up to date.
    Migrate(MigrateError),
}

impl Db {
    /// A write transaction that every other writer of `table` — in this process, another
    /// process, or another node on the same PostgreSQL — waits for until it ends, so that what
    /// it reads (the chain tip, an ERL's id, a counter) is still true when it writes.
    ///
    /// SQLite: `BEGIN IMMEDIATE` (the whole database's write lock). PostgreSQL: `LOCK TABLE …
    /// IN SHARE ROW EXCLUSIVE MODE`, the weakest mode that conflicts with itself and with every
    /// row write, while plain reads (`ACCESS SHARE`: history, verify, an export) go on
    /// (PostgreSQL manual, "Explicit Locking", table-level lock modes). Taken as the first
    /// statement, so under READ COMMITTED every later statement sees all that the previous
    /// holder committed.
    pub async fn begin_write(&self, table: &str) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        self.lock(&mut tx, table).await?;
        Ok(tx)
    }

    /// [`Db::begin_write`] on a connection the caller holds (e.g. one it set a PRAGMA on).
    pub async fn begin_write_on<'c>(
        &self,
        conn: &'c mut AnyConnection,
        table: &str,
    ) -> Result<sqlx::Transaction<'c, sqlx::Any>, sqlx::Error> {
        let mut tx = sqlx::Connection::begin_with(conn, self.backend.begin_write()).await?;
        self.lock(&mut tx, table).await?;
        Ok(tx)
    }

    async fn lock(&self, tx: &mut AnyConnection, table: &str) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            tx.execute(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE").as_str()).await?;
        }
        Ok(())
    }

    /// A PostgreSQL `LISTEN` connection to this store, outside the pool (sqlx's `Any` driver
    /// has no listener, so a plain `PgListener` on the same URL); `None` for SQLite, which only
    /// one node uses. The error never shows the password.
    pub async fn pg_listener(&self) -> Option<Result<sqlx::postgres::PgListener, String>> {
        match &*self.location {
            Location::Sqlite(_) => None,
            Location::Postgres(url) => Some(
                sqlx::postgres::PgListener::connect(url.secret())
                    .await
                    .map_err(|e| redact(&e.to_string(), url.secret())),
            ),
        }
    }

    /// A PostgreSQL connection of its own, outside the pool, set up as the pool's are (e.g. to
    /// hold a session-level lock for as long as it lives); `None` for SQLite. The error never
    /// shows the password.
    pub async fn pg_connection(&self) -> Option<Result<sqlx::postgres::PgConnection, String>> {
        match &*self.location {
            Location::Sqlite(_) => None,
            Location::Postgres(url) => Some(
                async {
                    let mut conn = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(url.secret()).await?;
                    conn.execute(PG_SESSION_SETTINGS).await?;
                    Ok::<_, sqlx::Error>(conn)
                }
                .await
                .map_err(|e| redact(&e.to_string(), url.secret())),
            ),
        }
    }

    /// A read-only transaction that sees one snapshot for all its statements (verify, export,
    /// the wiremap load): SQLite's deferred transaction under WAL does; PostgreSQL's default
    /// READ COMMITTED takes a new snapshot per statement, so ask for REPEATABLE READ.
    pub async fn begin_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await,
        }
    }
}

/// Open (creating it if missing) the store at `location` and bring its schema up to date.
///
/// SQLite: the directory must exist: a missing directory usually means a wrong path in the
/// config, and creating it would hide that. PostgreSQL: the database must exist (an admin
/// creates it and its user); its tables are created here.
pub async fn open(location: &Location) -> Result<Db, OpenError> {
    // Registers the SQLite and PostgreSQL drivers with `Any` (idempotent).
    sqlx::any::install_default_drivers();
    let (pool, migrator) = match location {
        Location::Sqlite(path) => (open_sqlite(path).await?, &SQLITE_MIGRATOR),
        Location::Postgres(url) => (open_postgres(url).await?, &POSTGRES_MIGRATOR),
    };
    migrator.run(&pool).await.map_err(OpenError::Migrate)?;
    Ok(Db { pool, backend: location.backend(), location: Arc::new(location.clone()) })
}

async fn open_sqlite(path: &Path) -> Result<AnyPool, OpenError> {
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
    // `Any` connects from a URL only; sqlx's SQLite URL parser percent-decodes the path, so
    // encode every byte that could be read as URL syntax. Absolute, so that a relative name is
    // not taken for a URL host. mode=rwc: create the file if missing.
    let abs = std::path::absolute(path).map_err(|e| OpenError::Open(e.to_string()))?;
    let text = abs.to_str().ok_or_else(|| OpenError::Open("the path is not UTF-8".into()))?;
    let mut url = String::from("sqlite://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    let options: AnyConnectOptions = url.parse().map_err(|e: sqlx::Error| OpenError::Open(e.to_string()))?;
    let pool = AnyPoolOptions::new()
        // One writer at a time (SQLite's rule) plus concurrent readers.
        .max_connections(4)
        // The URL carries no PRAGMAs, so each connection sets them.
        .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }));
    connect(pool, &options, |c| Box::pin(sqlite_pragmas(c)), |e| e.to_string()).await
}

/// What every SQLite connection is set to.
async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // WAL: readers (history, verify, export, the core's wiremap reload) never block the writer,
    // nor it them.
    conn.execute("PRAGMA journal_mode = WAL").await?;
    // FULL: every commit is fsynced before it returns. NORMAL in WAL mode may lose the last
    // commits on power loss, and an acknowledged audit event must not be lost.
    conn.execute("PRAGMA synchronous = FULL").await?;
    conn.execute(format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis()).as_str()).await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

async fn open_postgres(url: &PgUrl) -> Result<AnyPool, OpenError> {
    let options: AnyConnectOptions =
        url.secret().parse().map_err(|e: sqlx::Error| OpenError::Open(redact(&e.to_string(), url.secret())))?;
    let pool = AnyPoolOptions::new()
        // The audit writer, the LIS refresh, the sightings writer, API reads: a few each.
        .max_connections(8)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| Box::pin(async move { pg_session_settings(conn).await }));
    connect(pool, &options, |c| Box::pin(pg_session_settings(c)), |e| redact(&e.to_string(), url.secret())).await
}

async fn pg_session_settings(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(PG_SESSION_SETTINGS).await.map(|_| ())
}

/// Connects once outside the pool, sets the connection up with `setup`, then builds the pool.
///
/// sqlx's pool retries a connection that fails (refused, or its `after_connect` failing) until
/// its acquire timeout, and then says only "pool timed out while waiting for an open
/// connection". One direct attempt first reports the cause instead: connection refused,
/// authentication failed, no such database, "file is not a database". Bounded by
/// [`PG_ACQUIRE_TIMEOUT`]: a server that drops packets does not hang the start.
async fn connect(
    pool: AnyPoolOptions,
    options: &AnyConnectOptions,
    setup: for<'c> fn(&'c mut AnyConnection) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>>,
    say: impl Fn(&sqlx::Error) -> String,
) -> Result<AnyPool, OpenError> {
    let first = async {
        let mut conn = <AnyConnection as sqlx::Connection>::connect_with(options).await?;
        setup(&mut conn).await?;
        sqlx::Connection::close(conn).await
    };
    match tokio::time::timeout(PG_ACQUIRE_TIMEOUT, first).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(OpenError::Open(say(&e))),
        Err(_) => return Err(OpenError::Open(format!("no answer within {} s", PG_ACQUIRE_TIMEOUT.as_secs()))),
    }
    pool.connect_with(options.clone()).await.map_err(|e| OpenError::Open(say(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_outside_literals() {
        let sql = "SELECT a FROM t WHERE b = ? AND c LIKE ? ESCAPE '\\' AND d = '?' LIMIT ?";
        assert_eq!(Backend::Sqlite.sql(sql), sql);
        assert_eq!(
            Backend::Postgres.sql(sql),
            "SELECT a FROM t WHERE b = $1 AND c LIKE $2 ESCAPE '\\' AND d = '?' LIMIT $3"
        );
    }

    #[test]
    fn urls_are_parsed_and_shown_without_the_password() {
        let l = Location::parse_url("postgres://sos:s3cret@db.example:5433/sosdesk").unwrap();
        assert_eq!(l.backend(), Backend::Postgres);
        assert_eq!(l.to_string(), "postgres://sos@db.example:5433/sosdesk");
        assert!(!format!("{l:?}").contains("s3cret"));
        assert_eq!(
            Location::parse_url("sqlite:/var/lib/sosdesk/s.db").unwrap().path(),
            Some(Path::new("/var/lib/sosdesk/s.db"))
        );
        assert_eq!(Location::parse_url("sqlite://rel.db").unwrap().path(), Some(Path::new("rel.db")));
        for bad in [
            "mysql://u:s3cret@h/d",
            "postgres://u:s3cret@/d",
            "postgres://u:s3cret@h",
            "postgres://u:s3cret@h:99999/d",
            "postgres://u:s3cret@h/d?sslmode=bogus",
            "sqlite:",
        ] {
            let e = Location::parse_url(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }

    /// The SQLite migrations were moved to migrations/sqlite/: their checksums (SHA-384 of the
    /// text) must be the ones existing stores recorded, or `open` refuses those stores.
    #[test]
    fn sqlite_migration_checksums_are_unchanged() {
        let got: Vec<(i64, String)> = SQLITE_MIGRATOR
            .iter()
            .map(|m| (m.version, m.checksum.iter().map(|b| format!("{b:02x}")).collect::<String>()))
            .collect();
        let want: &[(i64, &str)] = &CHECKSUMS;
        for (v, sum) in want {
            assert!(got.contains(&(*v, sum.to_string())), "migration {v}: checksum changed; got {got:?}");
        }
    }

    /// sha384sum of migrations/*.sql before they moved (commit fea597b).
    const CHECKSUMS: [(i64, &str); 5] = [
        (
            20261122000000,
            "6a8876e0c2905ab3b62fa0311b3fd1d07d4d9af1dda79e0d54c92b651b4051ed9eb441dc7e2cf058575d47960a7286e7",
        ),
        (
            20261122010000,
            "7e1539e46c81069cbc86c2e438f4ec07167f246946b9ec3647d43b5cd21cd0bfcb09d47d730e3f6e77bea0721633820c",
        ),
        (
            20261122020000,
            "0e59b671605d96c490bbb8ed715dc71210c7ef93a2f0c994cceb204fd17d257f276d16cae4c1ff9eecf4c458bbabfe0c",
        ),
        (
            20261204000000,
            "0e8e158d63ee8c1fe0d7bbb15e9a2a4157149973a842e2ed922428cf5624b7789a1bf1c2b4882710a6b8599e6f247fd5",
        ),
        (
            20261205000000,
            "f288ebdb615f97b6ed45898dba00901fe6f742ccec2fbdfcb96ee79af805da7998f0dddbd7890b76f27cd3ce5da26261",
        ),
    ];
}
