//! The playbook as written: model, loading with positions, templating.

pub(crate) mod load;
pub(crate) mod model;
pub(crate) mod spans;
pub(crate) mod template;
pub(crate) mod typing;
mod yaml_errors;

pub(crate) use load::Source;
