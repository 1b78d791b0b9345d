//! Results: `run.json`, `.hgrm` files, interval logs, charts, `report.html`,
//! `compare` and its page, the interactive charts of both pages, `merge`
//! of workers' runs, and what a run prints in the terminal.

pub mod charts;
pub mod compare;
pub mod compare_html;
pub mod env;
pub mod files;
pub mod hgrm;
pub mod html;
pub mod merge;
pub mod plot;
pub mod terminal;
