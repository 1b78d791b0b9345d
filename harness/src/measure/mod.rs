//! Measurement: the run clock, HdrHistograms and per-thread recorders.

pub mod clock;
pub mod hist;
pub mod recorder;
