//! The PostgreSQL kinds: `pg.restore` (with its archive handling) and `pg.sql`.

mod archive;
mod describe;
mod finish;
mod progress;
mod restore;
mod split;
mod sql;
mod stream;
mod target;
mod transfer;
mod tuning;
mod verify;

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

/// The `application_name` of a step's sessions: `drrun/RUN/STEP`, at most the 63 bytes
/// the server keeps, so it can be found again.
fn app_name(ctx: &crate::steps::StepCtx) -> String {
    let mut name = format!("drrun/{}/{}", ctx.run_id, ctx.step_id);
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Connects as the step: `conn` with the step's `application_name`.
fn as_step(conn: &Conn, ctx: &crate::steps::StepCtx) -> Conn {
    Conn {
        app_name: Some(app_name(ctx)),
        ..conn.clone()
    }
}

/// Ends what an earlier attempt of this step left running on the server (drrun was
/// killed; the resume starts the step again): its sessions carry the same name.
async fn end_predecessors(ctx: &crate::steps::StepCtx, conn: &Conn, bin: Option<&str>) {
    // Only a resumed step can have a predecessor: a fresh one pays nothing.
    if !ctx.earlier_attempt {
        return;
    }
    let name = app_name(ctx);
    let wait = std::time::Duration::from_secs(10);
    match crate::services::pg::end_predecessors(conn, bin, &name, wait).await {
        Ok(0) => {}
        Ok(n) => ctx.note(format!(
            "ended {n} session(s) an earlier attempt of this step left on the server"
        )),
        // The step's own connection will say what is wrong, if anything is.
        Err(why) => ctx.note(format!(
            "could not check for an earlier attempt's sessions: {why}"
        )),
    }
}

/// Passes `result` on; when the step was cancelled, first says whether the server
/// confirms that none of its statements still runs (a client that died may leave one
/// running, and committing).
async fn confirm_if_cancelled<T>(
    ctx: &crate::steps::StepCtx,
    conn: &Conn,
    bin: Option<&str>,
    result: Result<T, crate::outcome::Failure>,
) -> Result<T, crate::outcome::Failure> {
    if result.is_err() && ctx.cancel.is_cancelled() {
        let name = app_name(ctx);
        let wait = std::time::Duration::from_secs(5);
        match crate::services::pg::confirm_cancelled(conn, bin, &name, wait).await {
            Ok(0) => ctx.note("cancel confirmed: no statement of this step runs on the server"),
            Ok(n) => ctx.note(format!(
                "cancel confirmed: {n} statement(s) of this step needed pg_cancel_backend, none runs now"
            )),
            Err(why) => ctx.note(format!("cancel NOT confirmed: {why}")),
        }
    }
    result
}
