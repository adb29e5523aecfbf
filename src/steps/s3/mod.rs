//! The S3 kinds: `s3.fetch` and its parts (choosing the backup, the download).

mod download;
mod fetch;
mod select;

pub(crate) use fetch::S3Fetch;
