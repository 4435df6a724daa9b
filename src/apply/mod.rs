//! Everything with effects on a stack: back up the images and files,
//! execute a plan one change at a time gated on health, roll back what
//! fails, keep the revision journal, and recover a revision a killed run
//! left unfinished.

pub mod backup;
pub mod error;
pub mod execute;
pub mod files;
pub mod handover;
pub mod health;
pub mod recovery;
pub mod revision;
pub mod snapshot;
pub mod volumes;
