//! The store tests' database, on either backend (issue 14): [`TestDb::sqlite`] is a file in a
//! temp dir, [`TestDb::postgres`] a database on a throwaway PostgreSQL server of the test's own
//! ([`super::postgres`]). [`store_test!`] runs a test written once on both.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sosdesk::db::Location;
use sqlx::{AnyConnection, Connection};

use super::postgres::PgServer;

pub enum TestDb {
    Sqlite { dir: tempfile::TempDir, path: PathBuf },
    Postgres { server: PgServer, db: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sosdesk.db");
        TestDb::Sqlite { dir, path }
    }

    pub fn postgres() -> TestDb {
        let server = PgServer::start();
        let db = server.create_db();
        TestDb::Postgres { server, db }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    /// Another empty store on the same backend (a file beside this one, a database on the same
    /// server): for tests that want a fresh store per case.
    pub fn another(&self) -> Location {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        match self {
            TestDb::Sqlite { dir, .. } => {
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Location::Sqlite(dir.path().join(format!("other-{n}.db")))
            }
            TestDb::Postgres { server, .. } => Location::parse_url(&server.url(&server.create_db())).unwrap(),
        }
    }

    /// What `[store]` names: the file, or the URL (with the password).
    pub fn location(&self) -> Location {
        match self {
            TestDb::Sqlite { path, .. } => Location::Sqlite(path.clone()),
            TestDb::Postgres { server, db } => Location::parse_url(&server.url(db)).unwrap(),
        }
    }

    /// The `[store]` lines of a config file for this store.
    pub fn config_lines(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => format!("[store]\npath = {:?}\n", path.display().to_string()),
            TestDb::Postgres { server, db } => format!("[store]\nurl = {:?}\n", server.url(db)),
        }
    }

    /// `config` (a config file's text) with its `[store]` section — the header, comment lines and
    /// the `path` line — replaced by [`TestDb::config_lines`].
    pub fn set_store(&self, config: &str) -> String {
        let at = config.find("[store]\n").expect("the config has a [store] section");
        let path = at + config[at..].find("\npath = ").expect("[store] path") + 1;
        let end = path + config[path..].find('\n').unwrap() + 1;
        format!("{}{}{}", &config[..at], self.config_lines(), &config[end..])
    }

    /// The `--store` argument of the CLI for this store.
    pub fn store_arg(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => path.display().to_string(),
            TestDb::Postgres { server, db } => server.url(db),
        }
    }

    /// The SQLite file (panics on PostgreSQL).
    pub fn path(&self) -> &Path {
        match self {
            TestDb::Sqlite { path, .. } => path,
            TestDb::Postgres { .. } => panic!("a PostgreSQL store has no file"),
        }
    }

    /// The folder for the test's other files.
    pub fn dir(&self) -> &Path {
        match self {
            TestDb::Sqlite { dir, .. } => dir.path(),
            TestDb::Postgres { server, .. } => server.dir(),
        }
    }

    /// A plain connection, as an attacker with write access (or an admin's shell) would have;
    /// SQL with `$1, $2 …` placeholders works on both.
    pub async fn raw(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        let url = match self {
            TestDb::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            TestDb::Postgres { server, db } => server.url(db),
        };
        let mut c = AnyConnection::connect(&url).await.unwrap();
        if !self.is_postgres() {
            sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut c).await.unwrap();
        }
        c
    }

    /// Runs each statement on a raw connection.
    pub async fn exec(&self, sql: &[&str]) {
        let mut c = self.raw().await;
        for s in sql {
            sqlx::query(s).execute(&mut c).await.unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        c.close().await.unwrap();
    }

    /// `SELECT count(*) FROM table`.
    pub async fn count(&self, table: &str) -> i64 {
        let mut c = self.raw().await;
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }

    /// Drops one of the append-only triggers of `events`, as an attacker would first.
    pub async fn drop_trigger(&self, name: &str) {
        let sql =
            if self.is_postgres() { format!("DROP TRIGGER {name} ON events") } else { format!("DROP TRIGGER {name}") };
        self.exec(&[&sql]).await;
    }
}

/// Runs the store test `async fn name(db: TestDb)` once per backend, as `name::sqlite` and
/// `name::postgres`, each with a fresh [`TestDb`]. (A module and a function may share a name:
/// they live in different namespaces.) Attributes before the name (e.g. `#[ignore = "…"]`) go
/// on both.
///
/// `store_test!(sync name)`: the same for a plain `fn name(db: TestDb)` (a test that starts a
/// [`super::lab::Lab`], which runs its own runtime).
macro_rules! store_test {
    (sync $name:ident) => {
        mod $name {
            use $crate::support::store::TestDb;

            #[test]
            fn sqlite() {
                super::$name(TestDb::sqlite())
            }

            #[test]
            fn postgres() {
                super::$name(TestDb::postgres())
            }
        }
    };
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            use $crate::support::store::TestDb;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn sqlite() {
                super::$name(TestDb::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn postgres() {
                super::$name(TestDb::postgres()).await
            }
        }
    };
}
pub(crate) use store_test;
