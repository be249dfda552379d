//! The state directory and the SQLite database in it.
//!
//! One database file (`hids.db`) holds the FIM baseline, log positions and the alert spool. It is
//! opened in WAL mode so that `hids status` and the CLI can read while the agent writes. The schema
//! evolves through numbered migrations (`migrations/NNNN_name.sql`), each applied once, in a
//! transaction, and recorded in `PRAGMA user_version`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// The schema, in order. The number of a migration is its position plus one.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/0001_init.sql")),
    ("0002_fim", include_str!("migrations/0002_fim.sql")),
    (
        "0003_positions",
        include_str!("migrations/0003_positions.sql"),
    ),
    ("0004_spool", include_str!("migrations/0004_spool.sql")),
    ("0005_agent", include_str!("migrations/0005_agent.sql")),
    (
        "0006_response",
        include_str!("migrations/0006_response.sql"),
    ),
    (
        "0007_fim_outbox",
        include_str!("migrations/0007_fim_outbox.sql"),
    ),
];

/// The name of the database file in the state directory.
pub const DB_FILE: &str = "hids.db";

/// The database and the files SQLite keeps beside it, in `state_dir`.
pub fn db_files(state_dir: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| state_dir.join(format!("{DB_FILE}{s}")))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {} is not safe: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {} has schema version {found}, newer than this hids knows ({known}); upgrade hids", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migration {name} failed on {}: {source}", path.display())]
    Migration {
        path: PathBuf,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error on {}: {source}", path.display())]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    crate::sys::euid() == 0
}

/// Creates the state directory (and missing parents) with mode 0700, or checks an existing one:
/// it must be a real directory (not a symlink) owned by us, and is tightened to 0700.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(StateError::Unsafe {
                    path: dir.to_path_buf(),
                    reason: "it is not a directory (a symlink is refused)".into(),
                });
            }
            if meta.uid() != crate::sys::euid() {
                return Err(StateError::Unsafe {
                    path: dir.to_path_buf(),
                    reason: format!("it is owned by uid {}, not by us", meta.uid()),
                });
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                    StateError::Io {
                        path: dir.to_path_buf(),
                        source,
                    }
                })?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            }),
        Err(source) => Err(StateError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates (if missing) a file with mode 0600 without following a symlink, and tightens an
/// existing one to 0600.
///
/// An existing file is never opened, only looked at and chmodded by path: this runs on the
/// database while the same process holds SQLite connections to it, and closing *any* descriptor
/// of a file drops every POSIX (fcntl) lock the process holds on it. Without its shared lock, the
/// agent looked absent to the next `hids status`, which then checkpointed and deleted the WAL
/// under the agent's open connections: every later write (status, positions, spool, baseline)
/// went to an unlinked file.
pub fn ensure_private_file(path: &Path) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
            {
                // Nothing of ours can hold a lock on a file that did not exist.
                Ok(_) => return Ok(()),
                // Created meanwhile by another process: check it like any existing file.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    fs::symlink_metadata(path).map_err(io_err)?
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(e) => return Err(io_err(e)),
    };
    if !meta.is_file() {
        return Err(StateError::Unsafe {
            path: path.to_path_buf(),
            reason: "not a regular file (a symlink is refused)".into(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        // The directory is ours and 0700 (ensure_dir), so the path cannot be swapped for a
        // symlink between the check above and this chmod.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    Ok(())
}

/// The open state: the directory and its database.
pub struct State {
    pub dir: PathBuf,
    pub db_path: PathBuf,
    pub conn: Connection,
}

impl State {
    /// Opens (creating as needed) the state directory and database, applying pending migrations.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        ensure_dir(dir)?;
        let db_path = dir.join(DB_FILE);
        ensure_private_file(&db_path)?;
        let conn = open_db(&db_path)?;
        Ok(State {
            dir: dir.to_path_buf(),
            db_path,
            conn,
        })
    }

    /// Opens another connection to the same database (one per thread).
    pub fn connect(&self) -> Result<Connection, StateError> {
        open_db(&self.db_path)
    }
}

/// Opens the database at `path` in WAL mode and brings its schema up to date.
pub fn open_db(path: &Path) -> Result<Connection, StateError> {
    let sql_err = |source| StateError::Sql {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(|source| StateError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_err)?;
    // Switching a new database to WAL takes an exclusive lock without waiting on the busy
    // handler, so two processes opening a fresh state directory at once (the agent and
    // `hids status`) would see "database is locked": retry for as long as the busy timeout.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < end =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.map_err(sql_err)?,
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql_err)?;
    migrate(&mut conn, path)?;
    // The WAL and shared-memory files are created by SQLite with the database's mode; make sure.
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.is_file() && m.mode() & 0o077 != 0 {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
            }
        }
    }
    Ok(conn)
}

/// The schema version this build knows.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let sql_err = |source| StateError::Sql {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err)?;
    let known = schema_version();
    if current > known {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known,
        });
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let mig_err = |source| StateError::Migration {
            path: path.to_path_buf(),
            name,
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(mig_err)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(mig_err)?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql).map_err(mig_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(mig_err)?;
        tx.commit().map_err(mig_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_openers_of_a_new_state_dir_all_succeed() {
        // The agent, `hids status` and `hids alerts` may all open a fresh state dir at once.
        for round in 0..30 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join(format!("state{round}"));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let dir = dir.clone();
                    std::thread::spawn(move || State::open(&dir).map(|_| ()))
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn creates_private_dir_and_db_with_wal_and_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        let st = State::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&st.db_path).unwrap().mode() & 0o777, 0o600);
        let mode: String = st
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let v: i64 = st
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema_version());
        drop(st);
        // Reopening applies nothing twice.
        State::open(&dir).unwrap();
    }

    /// The POSIX locks this process holds on `path`'s inode, as /proc/locks lists them.
    fn my_locks(path: &Path) -> usize {
        let ino = fs::metadata(path).unwrap().ino();
        let pid = std::process::id().to_string();
        fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"POSIX")
                    && f.get(4) == Some(&pid.as_str())
                    && f.get(5).is_some_and(|d| d.ends_with(&format!(":{ino}")))
            })
            .count()
    }

    #[test]
    fn reopening_the_state_keeps_sqlite_locks_on_the_database() {
        // Regression: opening and closing hids.db outside SQLite dropped the running agent's
        // shared lock, and the next `hids status` deleted the WAL under it.
        let tmp = tempfile::tempdir().unwrap();
        let st = State::open(tmp.path()).unwrap();
        let _: i64 = st
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        let held = my_locks(&st.db_path);
        assert!(held > 0, "a WAL connection holds a shared lock");
        let again = State::open(tmp.path()).unwrap();
        drop(again);
        ensure_private_file(&st.db_path).unwrap();
        assert_eq!(my_locks(&st.db_path), held);
    }

    #[test]
    fn private_file_is_created_tightened_and_symlink_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        ensure_private_file(&f).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&f).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(matches!(
            ensure_private_file(&link),
            Err(StateError::Unsafe { .. })
        ));
    }

    #[test]
    fn loose_dir_is_tightened_and_symlink_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(ensure_dir(&link), Err(StateError::Unsafe { .. })));
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let st = State::open(tmp.path()).unwrap();
        st.conn
            .pragma_update(None, "user_version", schema_version() + 5)
            .unwrap();
        drop(st);
        assert!(matches!(
            State::open(tmp.path()),
            Err(StateError::TooNew { .. })
        ));
    }
}
