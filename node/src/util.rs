//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock unix time in milliseconds (for metadata only, never for consensus).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes available to this user on the filesystem holding `path` (None if it cannot be told).
pub fn free_disk_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is a properly sized
    // out-parameter that statvfs fills completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `stat` is initialised.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (stat.f_bavail as u64, stat.f_frsize as u64);
    Some(blocks.saturating_mul(size))
}

/// Most file descriptors the node asks for: the hard limit is often "unlimited" or in the
/// millions, and a soft limit that large only hides a leak.
const MAX_FD_LIMIT: u64 = 1 << 20;

/// Raises this process's soft limit on open files to its hard limit (at most
/// [`MAX_FD_LIMIT`]): the default soft limit of 1,024 was exhausted by ~1,000 idle HTTP
/// connections, after which the store and the blob store failed with "Too many open files".
/// Returns the soft limit in force afterwards (None if it cannot be told).
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, properly sized out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    let wanted = hard.min(MAX_FD_LIMIT);
    if wanted > soft {
        let raised = libc::rlimit {
            rlim_cur: wanted as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit whose soft limit does not exceed the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(wanted);
        }
    }
    Some(soft)
}

/// The soft limit on open files and how many are open now (Linux: /proc/self/fd), for the
/// health check. None where it cannot be told.
pub fn fd_usage() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, properly sized out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    #[allow(clippy::unnecessary_cast)]
    Some((limit.rlim_cur as u64, open))
}

/// Tasks a layer spawns, tracked: shutdown cancels them all at their next await point and
/// waits for them to end, so nothing of a stopped node keeps running or keeps its store alive.
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    tracker: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or the owner shuts down (after shutdown: not at all).
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    pub(crate) fn running(&self) -> usize {
        self.tracker.len()
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Tasks;

    #[tokio::test]
    async fn shutdown_ends_every_task_and_later_ones_never_start() {
        let tasks = Tasks::default();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..3 {
            let started_tx = started_tx.clone();
            // Tasks that would never end by themselves (a gossip loop, a stuck dial).
            tasks.spawn(async move {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
            });
        }
        for _ in 0..3 {
            started.recv().await.unwrap();
        }
        assert_eq!(tasks.running(), 3);
        tasks.shutdown().await;
        assert_eq!(tasks.running(), 0);
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        tasks.spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
        tokio::task::yield_now().await;
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(tasks.running(), 0);
    }
}
