//! The S3 kinds: `s3.fetch` and its parts (choosing the backup, the download), and
//! `s3.compare`.

mod compare;
mod download;
mod fetch;
mod select;

pub(crate) use compare::S3Compare;
pub(crate) use fetch::S3Fetch;
