#![doc = include_str!("../README.md")]
//!
//! This crate re-exports the three layers, so one dependency brings the whole stack.

pub use getty_core as core;
pub use getty_registry as registry;
pub use getty_rpc as rpc;
