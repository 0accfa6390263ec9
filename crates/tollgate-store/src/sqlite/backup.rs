//! The online backup of the SQLite database: a consistent copy of the live file, taken
//! with SQLite's backup API while `serve` keeps writing it.
//!
//! The copy is made in one backup step, inside one read transaction. Under WAL that
//! snapshot never blocks the writer; a copy made in several steps would instead start
//! over whenever another connection commits, which under steady load is every time. The
//! copy is written beside the destination and renamed into place only once it is
//! complete, checked and synced, so a backup file is whole or absent. Nothing here writes
//! to the source database: its connection is `query_only` and does not checkpoint on close.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;
use crate::sqlite::BUSY_TIMEOUT;

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteBackup {
    pub destination: PathBuf,
    /// Database pages copied.
    pub pages: u64,
    /// Size of the backup file.
    pub bytes: u64,
}

/// How long to wait before retrying a step that found the source busy, and how many times.
const BUSY_PAUSE: Duration = Duration::from_millis(50);
const BUSY_ATTEMPTS: u32 = 100;

pub(crate) fn backup(database: &Path, destination: &Path) -> Result<SqliteBackup, StoreError> {
    if !database.is_file() {
        return Err(StoreError::Database(format!(
            "no database at {}",
            database.display()
        )));
    }
    if is_same_file(database, destination) {
        return Err(StoreError::Database(format!(
            "the backup would overwrite the database itself ({})",
            destination.display()
        )));
    }
    let partial = partial_path(destination);
    let copied = copy_to(database, &partial).and_then(|pages| {
        let bytes = sync_file(&partial)?;
        std::fs::rename(&partial, destination).map_err(|error| {
            io_error(
                &format!("cannot move the backup into place at {}", destination.display()),
                &error,
            )
        })?;
        sync_parent(destination)?;
        Ok(SqliteBackup {
            destination: destination.to_owned(),
            pages,
            bytes,
        })
    });
    if copied.is_err() {
        // A failed backup leaves nothing that could pass for one.
        let _ = std::fs::remove_file(&partial);
    }
    copied
}

/// Copies the database into a new file at `partial` and checks the copy; returns the pages
/// copied.
fn copy_to(database: &Path, partial: &Path) -> Result<u64, StoreError> {
    match std::fs::remove_file(partial) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io_error(
                &format!("cannot remove the unfinished backup {}", partial.display()),
                &error,
            ));
        }
    }
    let source_error =
        |error: rusqlite::Error| sql_error(&format!("cannot read {}", database.display()), error);
    // Read-write without create: the file must exist, and a read-only connection could not
    // open a WAL database whose shared-memory file is missing. `query_only` keeps it a reader.
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_error)?;
    source.busy_timeout(BUSY_TIMEOUT).map_err(source_error)?;
    source
        .pragma_update(None, "query_only", true)
        .map_err(source_error)?;
    // The last connection to close would otherwise checkpoint the WAL into the file.
    source
        .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(source_error)?;

    let copy_error =
        |error: rusqlite::Error| sql_error(&format!("cannot write {}", partial.display()), error);
    let mut copy = Connection::open(partial).map_err(copy_error)?;
    let pages = {
        let backup = Backup::new(&source, &mut copy).map_err(copy_error)?;
        let mut attempts = 0;
        loop {
            // -1: every page in one step, from one snapshot.
            match backup.step(-1).map_err(copy_error)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if attempts < BUSY_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(BUSY_PAUSE);
                }
                StepResult::Busy | StepResult::Locked => return Err(StoreError::Busy),
                _ => {
                    return Err(StoreError::Database(
                        "the backup step gave an unknown result".to_owned(),
                    ));
                }
            }
        }
        u64::try_from(backup.progress().pagecount).unwrap_or(0)
    };
    // The copied header still says WAL; a backup is one self-contained file, so it goes
    // back to a rollback journal (a server that opens it switches to WAL again).
    let mode: String = copy
        .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
        .map_err(copy_error)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Database(format!(
            "the backup stayed in journal mode {mode}"
        )));
    }
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(copy_error)?;
    if check != "ok" {
        return Err(StoreError::Database(format!(
            "the backup fails SQLite's quick check: {check}"
        )));
    }
    copy.close().map_err(|(_, error)| copy_error(error))?;
    Ok(pages)
}

/// The file the copy is written to before it is renamed to `destination`.
fn partial_path(destination: &Path) -> PathBuf {
    let mut name = destination.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn is_same_file(database: &Path, destination: &Path) -> bool {
    match (database.canonicalize(), destination.canonicalize()) {
        (Ok(database), Ok(destination)) => database == destination,
        _ => false,
    }
}

/// Flushes the file to disk; returns its size.
fn sync_file(path: &Path) -> Result<u64, StoreError> {
    let file = std::fs::File::open(path)
        .map_err(|error| io_error(&format!("cannot open {}", path.display()), &error))?;
    file.sync_all()
        .map_err(|error| io_error(&format!("cannot sync {}", path.display()), &error))?;
    let metadata = file
        .metadata()
        .map_err(|error| io_error(&format!("cannot read {}", path.display()), &error))?;
    Ok(metadata.len())
}

/// Makes the rename durable: the directory entry is flushed too.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error(&format!("cannot sync {}", parent.display()), &error))
}

fn sql_error(context: &str, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Database(format!("{context}: {error}")),
    }
}

fn io_error(context: &str, error: &std::io::Error) -> StoreError {
    StoreError::Database(format!("{context}: {error}"))
}
