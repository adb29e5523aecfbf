//! The one integration-test binary: drives the real `drrun` executable.

mod engine;
mod support;
mod validate;
