//! Child processes in their own process groups, so a cancelled step takes its whole
//! process tree down with it, and a second Ctrl-C can kill every group at once.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Registration of a running child's process group. Dropping it while armed kills the group.
pub struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    pub fn register(pgid: i32) -> Self {
        GROUPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(pgid);
        Self { pgid, armed: true }
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The child finished normally; leave its group alone.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(set) = GROUPS.lock().unwrap().as_mut() {
            set.remove(&self.pgid);
        }
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; errors (ESRCH) are expected.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// Kills every registered group at once (second Ctrl-C).
pub fn kill_all_groups() {
    if let Some(set) = GROUPS.lock().unwrap().as_ref() {
        for pgid in set {
            signal_group(*pgid, libc::SIGKILL);
        }
    }
}

/// SIGTERM the group, give it `grace` to exit, then SIGKILL.
pub async fn terminate(child: &mut tokio::process::Child, pgid: i32, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Stragglers that ignored SIGTERM but whose leader exited.
    signal_group(pgid, libc::SIGKILL);
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
