//! The database's files on disk are private to the service: the folder is
//! created 0700, the database 0600 (SQLite gives its `-wal` and `-shm`
//! files the database file's mode), and looser modes found on an existing
//! database are tightened, with a log line. They hold password hashes,
//! token hashes and metadata no other local user should read.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Mode of the database, its `-wal` and its `-shm` file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a database folder Hangar creates.
pub const DIR_MODE: u32 = 0o700;

/// The database file and the two SQLite keeps beside it in WAL mode.
pub fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Creates the missing folders (0700) and an empty database file (0600),
/// which SQLite then fills as a new database.
pub(crate) fn create_private(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent)
            .map_err(|source| StoreError::Io {
                context: format!("cannot create the database folder {}", parent.display()),
                source,
            })?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Made by someone else in between: tightened like any existing one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path),
        Err(source) => Err(StoreError::Io {
            context: format!("cannot create the database {}", path.display()),
            source,
        }),
    }
}

/// Sets the database files that exist and are open to the group or others
/// to 0600, logging each. A file the service may not chmod (owned by
/// another user) is logged and left as it is: the database still opens.
pub(crate) fn tighten(path: &Path) -> Result<()> {
    for file in database_files(path) {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    context: format!("cannot read the mode of {}", file.display()),
                    source,
                });
            }
        };
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, Permissions::from_mode(FILE_MODE)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                mode.old = format!("{mode:04o}"),
                mode.new = format!("{FILE_MODE:04o}"),
                "database file was readable by other users; made it private"
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:04o}"),
                error = %e,
                "database file is readable by other users and cannot be made private"
            ),
        }
    }
    Ok(())
}
