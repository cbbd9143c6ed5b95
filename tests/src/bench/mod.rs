//! The pieces of `soapbench` (see BENCHMARKS.md): the histogram, the load itself, reports, and the
//! orchestrated measurements (`compare`, `sessions`, `preload`, `sql`).

pub mod compare;
pub mod floor;
pub mod hist;
pub mod ldap;
pub mod load;
pub mod preload;
pub mod procs;
pub mod report;
pub mod sessions;
pub mod sql;
