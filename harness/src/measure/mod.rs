//! Measurement: the run clock, HdrHistograms, per-thread recorders and CPU
//! accounting.

pub mod clock;
pub mod cpu;
pub mod hist;
pub mod recorder;
