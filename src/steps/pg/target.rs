//! Preparing the restore's target: recreating the database with the right owner (the
//! role split of managed PostgreSQL) and running `pre_sql` as the right role.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::restore::PgRestore;
use crate::outcome::Failure;
use crate::services::pg::{Conn, ident, literal, psql};
use crate::steps::StepCtx;

/// Who runs `pre_sql`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PreSqlAs {
    /// The maintenance user (`maintenance_url`), connected to the target database.
    #[default]
    Maintenance,
    /// The user the restore connects as (`url`).
    Target,
}

/// Where a restore goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RestoreInto {
    /// Straight into the target database.
    #[default]
    Target,
    /// Into a temporary database that replaces the target once the restore passed.
    Temporary,
}

/// What a restore that stopped after preparing its database (`into`) leaves there.
pub(super) fn left_behind(cfg: &PgRestore, into: &str, target: &str) -> String {
    if into != target {
        format!("the DR database `{target}` is as it was; the partial restore is in `{into}`")
    } else if cfg.recreate {
        format!(
            "the DR database `{target}` was dropped and recreated: it holds a partial restore, not the backup"
        )
    } else {
        format!("the DR database `{target}` may hold part of this restore on top of what it had")
    }
}

/// Recreates the database the restore goes into (`conn`'s) when asked or when it is a
/// temporary one, with the owner `owner_of` has, then runs `pre_sql` in it.
pub(super) async fn prepare_target(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    maintenance: &Conn,
    owner_of: &str,
) -> Result<(), Failure> {
    let bin = cfg.pg_bin.as_deref();
    let db = &conn.database;
    if cfg.recreate || db != owner_of {
        // Managed PostgreSQL splits the roles: an admin that is not a superuser recreates
        // the database, the application's role restores into it. The database keeps its
        // owner (the setting, else its owner now, else the restore's user), so the
        // application's role can create its tables in it again.
        let current = psql(
            maintenance,
            bin,
            &format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}",
                literal(owner_of)
            ),
            &ctx.cancel,
            true,
        )
        .await?;
        let owner = cfg
            .owner
            .clone()
            .or_else(|| Some(current.trim().to_string()).filter(|o| !o.is_empty()))
            .or_else(|| {
                conn.user
                    .clone()
                    .filter(|u| Some(u) != maintenance.user.as_ref())
            });
        let version: u32 = psql(
            maintenance,
            bin,
            "SHOW server_version_num",
            &ctx.cancel,
            true,
        )
        .await?
        .trim()
        .parse()
        .unwrap_or(0);
        // `WITH (FORCE)` (13+) ends the other sessions itself, with no need for the
        // right to signal them; older servers get pg_terminate_backend first.
        let drop = if version >= 130_000 {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", ident(db))
        } else {
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid();\nDROP DATABASE IF EXISTS {};",
                literal(db),
                ident(db)
            )
        };
        let owner_clause = owner
            .as_ref()
            .map(|o| format!(" OWNER {}", ident(o)))
            .unwrap_or_default();
        let sql = format!("{drop}\nCREATE DATABASE {}{owner_clause};\n", ident(db));
        psql(maintenance, bin, &sql, &ctx.cancel, false).await?;
        ctx.note(match &owner {
            Some(o) => format!("recreated database {db} (owner {o})"),
            None => format!("recreated database {db}"),
        });
    }
    // Extensions need the admin: by default `pre_sql` runs as the maintenance user,
    // connected to the target database.
    let pre_sql_conn = match cfg.pre_sql_as {
        PreSqlAs::Maintenance => maintenance.with_database(db),
        PreSqlAs::Target => conn.clone(),
    };
    for sql in &cfg.pre_sql {
        psql(&pre_sql_conn, bin, sql, &ctx.cancel, false).await?;
    }

    Ok(())
}

/// Where a `restore_into: temporary` restore goes before it replaces the target.
pub(super) fn temporary_name(db: &str, suffix: &str) -> String {
    let mut name = db.to_string();
    while name.len() + suffix.len() > 63 {
        name.pop();
    }
    name + suffix
}

/// Puts the restored temporary database in the target's place: the old target is
/// renamed away and dropped only once the new one holds its name.
pub(super) async fn swap_into_place(
    cfg: &PgRestore,
    ctx: &StepCtx,
    maintenance: &Conn,
    temporary: &str,
    target: &str,
) -> Result<(), Failure> {
    let bin = cfg.pg_bin.as_deref();
    let old = temporary_name(target, "_drrun_old");
    let exists = !psql(
        maintenance,
        bin,
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            literal(target)
        ),
        &ctx.cancel,
        true,
    )
    .await?
    .trim()
    .is_empty();
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({}, {}) AND pid <> pg_backend_pid();",
        literal(target),
        literal(&old)
    );
    let mut sql = format!("{terminate}\nDROP DATABASE IF EXISTS {};\n", ident(&old));
    if exists {
        sql.push_str(&format!(
            "{terminate}\nALTER DATABASE {} RENAME TO {};\n",
            ident(target),
            ident(&old)
        ));
    }
    sql.push_str(&format!(
        "ALTER DATABASE {} RENAME TO {};\n",
        ident(temporary),
        ident(target)
    ));
    if exists {
        sql.push_str(&format!("DROP DATABASE {};\n", ident(&old)));
    }
    psql(maintenance, bin, &sql, &ctx.cancel, false).await?;
    ctx.note(format!(
        "the restore passed its checks: {temporary} is now {target}"
    ));
    Ok(())
}
