//! Ops modules, on the same worker pool as the backup engine: `sweep` (`vault scan`: targets,
//! ICMP and TCP probes, host state), `ssh` (with `ssh_guard`), `remote` (push and pull), `mail`
//! and `watch`. They reach the manifest only through its narrow stores and never touch archives.

pub mod crypt;
pub mod daemon;
pub mod fleet;
pub mod host_restore;
pub mod mail;
pub mod remote;
pub mod ssh;
pub mod ssh_guard;
pub mod ssh_shell;
pub mod sweep;
pub mod watch;

/// Waits up to `wait` for any of `fds` to become ready (`ppoll`, nanosecond deadline).
pub(crate) fn wait_fds(fds: &mut [libc::pollfd], wait: std::time::Duration) {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as _,
    };
    // SAFETY: fds is a valid, exclusively borrowed pollfd array for the call's duration.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}
