//! `lost+found/` of the store: where start-up puts what it cannot explain, never
//! deleting it.

use super::recover::file_name;
use super::StoreError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Moves files to `lost+found/` (created 0700 on first use), never overwriting.
pub(super) struct LostFound {
    pub(super) dir: PathBuf,
    created: bool,
    pub(super) moved: u64,
}

impl LostFound {
    pub(super) fn new(data: &Path) -> Self {
        LostFound {
            dir: data.join("lost+found"),
            created: false,
            moved: 0,
        }
    }

    pub(super) fn put(&mut self, path: &Path, reason: &str) -> Result<(), StoreError> {
        if !self.created {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
                Ok(()) => {
                    if let Some(parent) = self.dir.parent() {
                        File::open(parent)?.sync_all()?;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(StoreError(format!(
                        "cannot create {}: {error}",
                        self.dir.display()
                    )))
                }
            }
            self.created = true;
        }
        let name = file_name(path);
        let mut target = self.dir.join(&name);
        // sled holds its lock on the data directory: nothing else writes here now.
        let mut n = 0;
        while target.symlink_metadata().is_ok() {
            n += 1;
            target = self.dir.join(format!("{name}.{n}"));
        }
        std::fs::rename(path, &target).map_err(|error| {
            StoreError(format!(
                "cannot move {} to {} (nothing is deleted, so the store does not start): \
                 {error}",
                path.display(),
                target.display()
            ))
        })?;
        tracing::warn!(
            file = %name,
            reason,
            moved_to = %target.display(),
            "store: an object nothing explains was moved to lost+found"
        );
        self.moved += 1;
        Ok(())
    }

    pub(super) fn put_all<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a PathBuf>,
        reason: &str,
    ) -> Result<(), StoreError> {
        paths
            .into_iter()
            .try_for_each(|path| self.put(path, reason))
    }

    /// fsync of both directories, so the moves are durable.
    pub(super) fn sync(&self, objects: &Path) -> Result<(), StoreError> {
        if self.moved > 0 {
            File::open(&self.dir)?.sync_all()?;
            File::open(objects)?.sync_all()?;
        }
        Ok(())
    }
}
