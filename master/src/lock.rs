//! One master per data directory: `master serve` holds an exclusive advisory lock (`flock`) on
//! `DATA_DIR/master.lock` for its whole life, and writes its pid, host name and start time into
//! the file so that a second master on the same directory refuses to start and names the holder.
//!
//! The operating system releases a `flock` when the holder's last file descriptor closes, so a
//! master killed with SIGKILL (or a crashed pod) leaves no stale lock behind: the next start
//! simply takes it. The file itself is never removed (removing it would let two processes lock
//! two different inodes of the same name); what it says about a former holder is only read when
//! the lock is taken.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::MasterError;

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "master.lock";

/// The exclusive lock of a data directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    /// Keeps the descriptor, hence the lock, open.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created if missing) without waiting. When another process
    /// holds it, the error names the directory and the holder as its lock file describes it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, MasterError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |e: std::io::Error| MasterError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Neither truncated nor recreated before the lock is ours: the holder's words stay.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !try_lock_exclusive(&file).map_err(io)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(MasterError::FailedPrecondition(format!(
                "data directory {} is in use by {}; stop it first (lock file {})",
                data_dir.display(),
                describe_holder(&holder),
                path.display()
            )));
        }
        let record = Holder::current().to_string();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(record.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds a lock, as written into the lock file (`key=value` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: u32,
    host: String,
    started_ms: u64,
}

impl Holder {
    fn current() -> Holder {
        Holder {
            pid: std::process::id(),
            host: host_name(),
            started_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    fn parse(text: &str) -> Option<Holder> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        Some(Holder {
            pid: field("pid")?.parse().ok()?,
            host: field("host")?.to_string(),
            started_ms: field("started_ms")?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pid={}", self.pid)?;
        writeln!(f, "host={}", self.host)?;
        writeln!(f, "started_ms={}", self.started_ms)?;
        writeln!(f, "started={}", utc_time(self.started_ms))
    }
}

/// "master pid 1234 on host h since 2026-01-02T03:04:05Z", or what is known.
fn describe_holder(text: &str) -> String {
    match Holder::parse(text) {
        Some(h) => format!(
            "master pid {} on host {} since {}",
            h.pid,
            h.host,
            utc_time(h.started_ms)
        ),
        // The holder has locked the file but not yet written it, or wrote something else.
        None => "another master (it has not recorded its pid yet)".to_string(),
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(unix)]
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(not(unix))]
fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".to_string())
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: the descriptor is open for as long as `file` lives.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// No advisory lock outside Unix: the file is still written, but nothing is refused.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        // flock locks belong to open file descriptions, so a second open in the same process
        // conflicts exactly as a second process would.
        let e = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(
            e.contains(&format!(
                "is in use by master pid {pid} on host {}",
                host_name()
            )),
            "{e}"
        );
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(e.contains("stop it first"), "{e}");
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(Holder::parse(&text).unwrap().pid, pid);
    }

    #[test]
    fn a_stale_or_foreign_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "pid=1\nhost=gone\nstarted_ms=0\nsome longer text that must be truncated\n",
        )
        .unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            !text.contains("gone") && !text.contains("truncated"),
            "{text}"
        );
    }

    #[test]
    fn holders_are_described() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_798_761_599_000), "2026-12-31T23:59:59Z");
        let h = Holder {
            pid: 42,
            host: "node-a".into(),
            started_ms: 1_000,
        };
        assert_eq!(Holder::parse(&h.to_string()), Some(h));
        assert_eq!(
            describe_holder("pid=42\nhost=node-a\nstarted_ms=1000\n"),
            "master pid 42 on host node-a since 1970-01-01T00:00:01Z"
        );
        assert!(describe_holder("").contains("not recorded"));
    }
}
