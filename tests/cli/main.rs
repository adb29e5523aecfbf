//! The one integration-test binary: drives the real `drrun` executable.

mod archive;
mod cancel;
mod compare;
mod drill;
mod engine;
mod http;
mod image;
mod kube;
mod metrics;
mod notify;
mod output;
mod pg;
mod s3;
mod split;
mod state;
mod support;
mod validate;
mod wagtail;
