//! The PostgreSQL kinds: `pg.restore` (with its archive handling) and `pg.sql`.

mod archive;
mod restore;
mod sql;
mod target;

pub(crate) use restore::PgRestore;
pub(crate) use sql::PgSql;

use crate::services::pg::Conn;
use crate::steps::guard::Touch;

/// What connecting to `conn` touches, for the guards.
fn touch(conn: &Conn) -> Touch {
    Touch::Pg {
        host: conn.host_for_guard(),
        database: conn.database.clone(),
        fields: &["url", "host", "port", "database"],
    }
}
