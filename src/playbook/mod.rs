//! The playbook as written: model, loading with positions, templating.

pub mod load;
pub mod model;
pub mod spans;
pub mod template;

pub use load::Source;
