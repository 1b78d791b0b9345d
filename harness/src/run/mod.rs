//! Running workloads: open-loop load generation, max-rate search, backlog
//! mode, and the sweep loop with progress and Ctrl-C.

pub mod consume;
pub mod generator;
pub mod handshake;
pub mod maxrate;
pub mod pace;
pub mod payload;
pub mod point;
pub mod result;
pub mod sustain;
pub mod sweep;
pub mod worker;
