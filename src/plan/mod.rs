//! The planner: from what the files say and what runs to a `Plan`.
//! Pure: no engine, no registry, no clock, no files; tested without a
//! daemon. `ops` gathers its inputs, `apply` carries the plan out.

pub mod classify;
pub mod diff;
pub mod ignore;
pub mod observation;
pub mod tags;
