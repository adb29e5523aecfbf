//! The HTTP kind `http.smoke` and its parts (settings, forms, sending, captures,
//! assertions, explaining a refusal).

mod captures;
mod checks;
mod form;
mod page;
mod send;
mod settings;
mod smoke;

pub(crate) use smoke::HttpSmoke;
