//! The backup engine: walking (`scan`), deciding (`plan`, pure), storing (`backup`) and
//! answering questions about the repository (`query`). It reaches the manifest and the
//! archives only through their modules, and reports progress through [`crate::progress`].

pub mod backup;
pub mod plan;
pub mod query;
pub mod repo;
pub mod scan;
