//! The commands whose handling is more than a call into the library, one group a file.

pub(super) mod docs;
pub(super) mod mail;
pub(super) mod remote;
pub(super) mod repo;
