//! Results: `run.json`, `.hgrm` files, interval logs, charts, `report.html`,
//! and `compare`.

pub mod charts;
pub mod compare;
pub mod env;
pub mod files;
pub mod hgrm;
pub mod html;
pub mod merge;
