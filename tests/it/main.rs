//! The integration tests: one binary (see tests/README.md). Each module drives the real `vault`
//! binary against temporary folders.

mod backup;
mod common;
mod config;
mod daemon;
mod daemon_status;
mod fleet;
mod fuzz_found;
mod hardening;
mod history;
mod mail;
mod remote;
mod restore;
mod retention;
mod review;
mod scan;
mod sealed;
mod ssh;
mod sshd;
mod structure;
mod system;
mod watch;
