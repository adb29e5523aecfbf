//! Clients of the services a drill talks to. They know nothing of step kinds, the
//! registry or the engine: they take settings and return results or a classified
//! [`Failure`](crate::outcome::Failure). The kinds in `steps/` are written as calls of these.

pub(crate) mod buckets;
pub(crate) mod http;
pub(crate) mod kube;
pub(crate) mod pg;
pub(crate) mod pushgateway;
pub(crate) mod s3;
pub(crate) mod webhook;
