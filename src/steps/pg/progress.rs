//! A restore's progress from `pg_restore --verbose`: which TOC entry it is at.

use std::time::Instant;

use crate::steps::StepCtx;
use crate::util::process::{LineObserver, Stream};

/// The observer for a `pg_restore` run by [`super::restore::pg_restore_command`]: its
/// output goes to the step's log, its progress into the step's phase.
pub(super) fn restore_lines(ctx: &StepCtx, total: Option<usize>) -> LineObserver {
    ctx.output_lines("pg_restore", Some(toc_progress(ctx, total)))
}

/// Counts the TOC entries `pg_restore --verbose` reports (`creating TABLE`, `processing
/// data for table`, `executing SEQUENCE SET`) into the step's phase, at most twice a
/// second, and drops those chatter lines from the kept standard error.
fn toc_progress(ctx: &StepCtx, total: Option<usize>) -> LineObserver {
    let ctx = ctx.clone();
    let state = std::sync::Mutex::new((0usize, None::<Instant>));
    std::sync::Arc::new(move |stream: Stream, line: &str| {
        if stream != Stream::Stderr {
            return true;
        }
        let Some(what) = verbose_line(line) else {
            return true;
        };
        if let Some(item) = ["creating ", "processing data for ", "executing "]
            .iter()
            .find_map(|p| what.strip_prefix(p).map(|rest| (p, rest)))
        {
            let mut st = state.lock().unwrap();
            st.0 += 1;
            let now = Instant::now();
            if st
                .1
                .is_none_or(|t| now.duration_since(t).as_millis() >= 500)
            {
                st.1 = Some(now);
                let object: String = format!("{}{}", item.0, item.1).chars().take(80).collect();
                let done = total.map_or(st.0, |t| st.0.min(t));
                ctx.phase(match total {
                    Some(t) => format!("restoring: {done} of {t} TOC entries ({object})"),
                    None => format!("restoring: {done} TOC entries ({object})"),
                });
            }
        }
        false
    })
}

/// What `pg_restore --verbose` says about each step of its work.
const CHATTER: &[&str] = &[
    "creating ",
    "processing ",
    "executing ",
    "connecting ",
    "launching ",
    "finished ",
    "entering ",
    "disabling ",
    "enabling ",
    "dropping ",
    "skipping ",
    "implied ",
    "restoring ",
    "setting owner",
];

/// The text of a `pg_restore --verbose` progress line, or `None` for anything else
/// (errors, warnings, their details and the `from TOC entry` context are kept).
fn verbose_line(line: &str) -> Option<&str> {
    let what = line.strip_prefix("pg_restore: ")?;
    is_chatter(what).then_some(what)
}

/// Whether `what` (after `pg_restore: `) is progress chatter.
pub(super) fn is_chatter(what: &str) -> bool {
    CHATTER.iter().any(|c| what.starts_with(c))
}

#[cfg(test)]
mod tests {
    use super::verbose_line;

    #[test]
    fn chatter_is_told_from_errors() {
        assert!(verbose_line("pg_restore: creating TABLE \"public.x\"").is_some());
        assert!(verbose_line("pg_restore: processing data for table \"public.x\"").is_some());
        assert!(verbose_line("pg_restore: error: could not execute query: ERROR:  x").is_none());
        assert!(
            verbose_line("pg_restore: from TOC entry 3410; 1259 16386 TABLE x drrun").is_none()
        );
        assert!(verbose_line("pg_restore: warning: errors ignored on restore: 1").is_none());
        assert!(verbose_line("Command was: CREATE TABLE x ();").is_none());
    }
}
