//! The backup engine: walking (`scan`), deciding (`plan`, pure), storing (`backup`), getting
//! back (`restore`, through the descriptor-relative `fsx`), verifying (`check`), pruning
//! (`forget`) and answering questions about the repository (`query`; a path's history:
//! `history`, `find`, `cat`). It reaches the manifest
//! and the archives only through their modules, and reports progress through
//! [`crate::progress`].

pub mod backup;
pub mod batch;
pub mod cat;
pub mod check;
pub mod find;
pub mod forget;
pub(crate) mod fsx;
pub mod history;
pub mod paths;
pub mod plan;
pub mod problem;
pub mod query;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod select;
pub mod shell;
pub mod walk;
