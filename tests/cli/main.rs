//! The one integration-test binary: drives the real `drrun` executable.

mod drill;
mod engine;
mod http;
mod kube;
#[path = "../support/kube.rs"]
mod kube_support;
mod pg;
#[path = "../support/pg.rs"]
mod pg_support;
mod s3;
#[path = "../support/s3.rs"]
mod s3_support;
mod support;
mod validate;
