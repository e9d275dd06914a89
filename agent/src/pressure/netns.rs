//! Reading another network namespace's host pressure.
//!
//! Decision: the caller names a namespace file (`/proc/PID/ns/net`, or a
//! bind-mounted `/run/netns/NAME`) and golens reads it from a short-lived
//! thread of its own that `setns(2)`s into it. Only that thread changes
//! namespace (setns to a network namespace is per thread), and it exits right
//! after, so the agent's other threads never see it. Inside the thread every
//! network reading already follows the thread's namespace: sock_diag sockets
//! are created in it, /proc/sys/net resolves per thread, and /proc/net is read
//! as /proc/thread-self/net. Host-wide values (vm.max_map_count, fs.file-nr)
//! are the same in every namespace. Joining a namespace needs CAP_SYS_ADMIN.
//!
//! Why not a child process: a thread costs no exec, no extra binary and no
//! IPC, and the reading code is the same one [`super::read_host`] runs.

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

use super::{host::read_host, HostPressure};

/// [`read_host`], with network values from the namespace at `net_namespace`.
pub fn read_host_in_net_namespace(net_namespace: &Path) -> io::Result<HostPressure> {
    in_net_namespace(net_namespace, read_host)
}

/// Runs `work` on a new thread joined to the network namespace at `path`.
pub(crate) fn in_net_namespace<T: Send>(
    path: &Path,
    work: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    let namespace = File::open(path)?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: a valid fd for the call; setns only changes this thread.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let error = io::Error::last_os_error();
                return Err(io::Error::new(
                    error.kind(),
                    format!("joining network namespace {}: {error}", path.display()),
                ));
            }
            Ok(work())
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
