//! Results: `run.json`, `.hgrm` files, interval logs, charts, `report.html`,
//! `compare`, and what a run prints in the terminal.

pub mod charts;
pub mod compare;
pub mod env;
pub mod files;
pub mod hgrm;
pub mod html;
pub mod terminal;
