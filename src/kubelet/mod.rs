//! The node agent that runs pods; for now only its container log store.

pub mod logs;
