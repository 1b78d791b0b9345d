//! Measurement: the run clock, HdrHistograms, per-thread recorders, CPU
//! accounting and the disk's sync latency.

pub mod clock;
pub mod cpu;
pub mod disk;
pub mod hist;
pub mod recorder;
