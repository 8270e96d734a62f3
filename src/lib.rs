//! getty-rs facade: one dependency for the whole stack.
pub use getty_core as core;
pub use getty_registry as registry;
pub use getty_rpc as rpc;
