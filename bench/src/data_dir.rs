//! Where a mode keeps its WAL and snapshots: `--data-dir DIR` (kept after the
//! run, for `myriad-log` and restarts) or a temporary directory removed when
//! the run ends, as shared/BENCH.md promises for every mode.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `statfs` magic of tmpfs, where O_DIRECT and fsync mean nothing.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The run's data directory; a temporary one is removed on drop.
pub struct DataDir {
    path: PathBuf,
    /// Holds the temporary directory alive; `None` for `--data-dir`.
    temp: Option<tempfile::TempDir>,
}

impl DataDir {
    /// `dir` (created if missing, kept) or, without it, a fresh temporary
    /// directory under the system's temporary directory.
    pub fn open(dir: Option<&Path>) -> anyhow::Result<DataDir> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
                Ok(DataDir {
                    path: dir.to_owned(),
                    temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("myriad-bench-")
                    .tempdir()
                    .context("cannot create a temporary data directory")?;
                Ok(DataDir {
                    path: temp.path().to_owned(),
                    temp: Some(temp),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory outlives the run (`--data-dir`).
    pub fn is_kept(&self) -> bool {
        self.temp.is_none()
    }

    /// Whether the directory is on tmpfs: fsync figures from there are not
    /// figures of a disk.
    pub fn is_on_tmpfs(&self) -> bool {
        let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: `statfs` is plain old data, so all-zero is a valid value.
        let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `stats` a valid out pointer.
        let rc = unsafe { libc::statfs(path.as_ptr(), &mut stats) };
        rc == 0 && stats.f_type as i64 == TMPFS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_directories_are_removed_and_given_ones_kept() {
        let temp = DataDir::open(None).unwrap();
        let temp_path = temp.path().to_owned();
        assert!(temp_path.is_dir() && !temp.is_kept());
        drop(temp);
        assert!(
            !temp_path.exists(),
            "the temporary data directory is removed"
        );

        let parent = tempfile::tempdir().unwrap();
        let given = parent.path().join("a/b");
        let kept = DataDir::open(Some(&given)).unwrap();
        assert!(kept.is_kept() && kept.path() == given);
        drop(kept);
        assert!(given.is_dir(), "--data-dir is kept");
    }

    #[test]
    fn dev_shm_is_tmpfs() {
        // /dev/shm is tmpfs on every Linux this runs on; skip where it is not mounted.
        if Path::new("/dev/shm").is_dir() {
            let shm = DataDir::open(Some(Path::new("/dev/shm"))).unwrap();
            assert!(shm.is_on_tmpfs());
        }
    }
}
