//! The HTTP kind `http.smoke` and its parts (sending, captures, assertions).

mod captures;
mod checks;
mod send;
mod smoke;

pub(crate) use smoke::HttpSmoke;
