//! The PostgreSQL kinds: `pg.restore` (with its archive handling) and `pg.sql`.

mod archive;
mod restore;
mod sql;

pub(crate) use restore::PgRestore;
pub(crate) use sql::PgSql;
