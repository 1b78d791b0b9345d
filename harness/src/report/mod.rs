//! Results: `run.json`, `.hgrm` files, interval logs, charts, `report.html`,
//! `compare` and its page, and the interactive charts of both pages.

pub mod charts;
pub mod compare;
pub mod compare_html;
pub mod env;
pub mod files;
pub mod hgrm;
pub mod html;
pub mod merge;
pub mod plot;
