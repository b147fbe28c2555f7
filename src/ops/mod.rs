//! Ops modules: plug-ins that run on the same worker pool as the backup engine (`scan` today;
//! `ssh`, `remote`, `mail` and `watch` to come). They reach the manifest only through its
//! narrow stores and never touch archives.

pub mod icmp;
pub mod mail;
pub mod remote;
pub mod ssh;
pub mod sweep;
pub mod targets;
pub mod tcp;
