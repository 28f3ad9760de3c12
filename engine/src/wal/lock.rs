//! One writer per WAL directory: `Wal::open_dir` takes an exclusive `flock`
//! on a lock file in the directory and holds it while the WAL is open, so a
//! second writer (another process, or another `Wal` in this one) is refused
//! instead of interleaving its writes and recovery with the first. Readers
//! (`scan::DirSource`, `myriad-log`) take no lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;

use super::error::WalError;

/// The lock file's name in a WAL directory (recovery ignores it).
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive `flock` on a WAL directory's lock file, released when
/// dropped (closing the file releases the lock) or when the thread that took
/// it ends, whichever comes first. The file belongs to the thread, not to the
/// `Wal`: a task that still held a handle when its executor stopped is never
/// dropped, and neither would the lock be (the node reopens its WAL on a new
/// executor after `Cluster::shutdown`). The file is opened with `O_CLOEXEC`,
/// so child processes do not inherit the lock.
#[derive(Debug)]
pub struct DirLock {
    id: u64,
    /// Held in this thread's `HELD`: never sent to another thread.
    _thread_bound: PhantomData<Rc<()>>,
}

thread_local! {
    /// The lock files this thread holds, by `DirLock::id`.
    static HELD: RefCell<HashMap<u64, File>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Fails only while the thread ends, which releases the lock anyway.
        let file = HELD.try_with(|held| held.borrow_mut().remove(&self.id));
        drop(file);
    }
}

impl DirLock {
    /// Takes the lock without waiting; `WalError::Locked` if it is held.
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io_err = |op, source| WalError::Io {
            op,
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err("opening lock file", e))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(WalError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(&mut file, &path),
                });
            }
            return Err(io_err("locking", err));
        }
        // Who holds it, for the error a second opener gets; not durable, and
        // not needed for the lock itself.
        let pid = format!("pid {}\n", std::process::id());
        let noted = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        if let Err(e) = noted {
            tracing::warn!(path = %path.display(), "could not note the WAL lock holder: {e}");
        }
        let id = NEXT_ID.with(|next| next.replace(next.get() + 1));
        HELD.with(|held| held.borrow_mut().insert(id, file));
        Ok(DirLock {
            id,
            _thread_bound: PhantomData,
        })
    }
}

/// The lock file and the holder it names, for `WalError::Locked`.
fn holder(file: &mut File, path: &Path) -> String {
    let mut text = String::new();
    let _ = file.take(64).read_to_string(&mut text);
    let text = text.trim();
    let own = format!("pid {}", std::process::id());
    match text {
        "" => format!("lock file {} is held", path.display()),
        t if t == own => format!("lock file {} is held by this process, {t}", path.display()),
        t => format!("lock file {} is held by {t}", path.display()),
    }
}
