//! The one integration-test binary: drives the real `drrun` executable.

mod engine;
mod http;
mod pg;
#[path = "../support/pg.rs"]
mod pg_support;
mod support;
mod validate;
