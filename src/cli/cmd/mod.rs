//! The commands, one group a file; `cli/mod.rs` only dispatches to them.

pub(super) mod backup;
pub(super) mod daemon;
pub(super) mod docs;
pub(super) mod fleet;
pub(super) mod history;
pub(super) mod mail;
pub(super) mod remote;
pub(super) mod repo;
pub(super) mod restore;
pub(super) mod ssh;
pub(super) mod sweep;
