//! Step kinds: one file per kind, and the registry below, the one list of them all.
//!
//! A kind is a config struct (its documented fields become the JSON schema and the
//! `drrun kinds` docs) implementing [`StepKind`]: its name, summary, effect class,
//! declared outputs, cross-field checks, a read-only `preview` and `run`.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) mod access;
mod context;
mod exec;
pub(crate) mod guard;
mod http;
mod kube;
mod pg;
mod s3;

pub(crate) use context::{Deferrals, Preview, PreviewCtx, StepCtx, step_log_path};

use crate::outcome::{Failure, Outputs};
use crate::playbook::typing::{TypeError, type_all};

/// What running a step does to the world; decides what the engine may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Effect {
    /// Only reads; always safe to repeat.
    Read,
    /// Writes, but repeating it leaves the same result.
    Idempotent,
    /// Writes that are not safe to repeat blindly (drops a database, runs a command).
    Destructive,
}

impl Effect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Idempotent => "idempotent",
            Self::Destructive => "destructive",
        }
    }
}

/// A declared output of a kind: `steps.<id>.outputs.<name>`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct OutputDoc {
    pub name: &'static str,
    pub doc: &'static str,
}

pub(crate) const fn output(name: &'static str, doc: &'static str) -> OutputDoc {
    OutputDoc { name, doc }
}

/// A problem with a step's settings found after they were typed (cross-field rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigIssue {
    /// Field under `with` (`key`, `requests[2].capture`), empty for the whole step.
    pub field: String,
    pub message: String,
}

impl ConfigIssue {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What the drill report reads from a kind's outputs, so that `report/` and `plan/` never
/// name kinds. Every hook is optional.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence {
    /// The time the data this step yields is from, for the RPO: (the output it was read
    /// from, an RFC 3339 or PostgreSQL timestamp). A step of such a kind may be named by
    /// `objectives.rpo_from`.
    pub data_time: Option<DataTime>,
    /// Steps of this kind are the RPO source when `objectives.rpo_from` names none (the
    /// first such step).
    pub default_rpo_source: bool,
    /// The backup the data came from, for the report's Backup section.
    pub backup: Option<fn(&Outputs) -> BackupEvidence>,
    /// The image this step deployed: (image, what ran before by container).
    pub deployed_image: Option<DeployedImage>,
    /// What the step proved, in a few lines for the report ("restored 53 tables, 14.2 MiB").
    pub summary: Option<fn(&Outputs) -> Vec<String>>,
    /// This kind's duration is the drill's restore time, which history compares.
    pub restores: bool,
}

/// Checks that a checkpoint's outputs still hold: `Err(why)` when they do not.
pub(crate) type StillHolds = fn(&Outputs) -> Result<(), String>;

/// Reads the time the data is from: (the output it came from, the timestamp).
pub(crate) type DataTime = fn(&Outputs) -> Option<(&'static str, String)>;
/// Reads the image deployed and what ran before, by container.
pub(crate) type DeployedImage = fn(&Outputs) -> Option<(String, serde_json::Value)>;

impl Evidence {
    pub(crate) const NONE: Self = Self {
        data_time: None,
        default_rpo_source: false,
        backup: None,
        deployed_image: None,
        summary: None,
        restores: false,
    };
}

/// The backup a drill restored, as its report shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackupEvidence {
    /// `s3://bucket/key` or a path.
    pub object: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// When it was taken (from its name or the store).
    pub taken: Option<String>,
    /// Its age when it was chosen.
    pub age: Option<String>,
    /// Every output the kind gave, for the JSON report.
    pub details: serde_json::Map<String, serde_json::Value>,
}

pub(crate) trait StepKind:
    DeserializeOwned + JsonSchema + Send + Sync + Sized + 'static
{
    const NAME: &'static str;
    /// One line: what the kind does.
    const SUMMARY: &'static str;
    const EFFECT: Effect;
    /// A step of this kind as a playbook would write it (`id:` then `kind:`, `with:`).
    /// Every example is validated together as one playbook by a test, and `drrun kinds`
    /// shows it.
    const EXAMPLE: &'static str;
    const OUTPUTS: &'static [OutputDoc];
    /// What the drill report reads from the outputs (default: nothing).
    const EVIDENCE: Evidence = Evidence::NONE;
    /// Template roots this kind renders itself while it runs (`captures` in
    /// `http.smoke`): the engine leaves them in place for the kind.
    const DEFERRED: &'static [&'static str] = &[];
    /// Whether a checkpoint's outputs still hold in the world before a resume reuses
    /// them (the fetched file is still there, with its size and sha256): `Err(why)` runs
    /// the step again, and what depends on it.
    const STILL_HOLDS: Option<StillHolds> = None;

    /// What the step would touch that guards protect: checked before the run starts for
    /// every touch whose settings are known by then (and again by the kind before its
    /// first request).
    fn touches(&self) -> Vec<guard::Touch> {
        Vec::new()
    }

    /// What the step's requests ask of the Kubernetes API, for `drrun rbac`.
    fn api_rules(&self) -> Vec<access::ApiRule> {
        Vec::new()
    }

    /// The effect of this step as configured (a `pg.sql` that only reads is `read`);
    /// decides retries and what `plan` may use. Default: the kind's [`StepKind::EFFECT`].
    fn effect(&self) -> Effect {
        Self::EFFECT
    }

    /// Cross-field checks that serde cannot express; run at compile time.
    fn check(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }

    /// What the step would do, from read-only sources only.
    fn preview(&self, ctx: &PreviewCtx) -> impl Future<Output = Preview> + Send;

    fn run(&self, ctx: &StepCtx) -> impl Future<Output = Result<Outputs, Failure>> + Send;
}

/// Metadata about a registered kind, for the compiler, `drrun kinds` and the schema.
#[derive(Debug)]
pub(crate) struct KindInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub effect: Effect,
    pub example: &'static str,
    pub outputs: &'static [OutputDoc],
    pub evidence: Evidence,
    pub deferred: &'static [&'static str],
    pub still_holds: Option<StillHolds>,
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Types `with` once and reports what the compiler and the pre-flight need of it, or
    /// every typing problem (none reported at paths `quiet` names: values known later).
    pub check: CheckFn,
}

/// Types a step's `with`; `quiet(path)` names values known only later.
pub(crate) type CheckFn =
    fn(&serde_json::Value, &dyn Fn(&str) -> bool) -> Result<Inspection, Vec<TypeError>>;

/// What typing a step's settings tells: its problems, what it would touch, its effect.
#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    pub issues: Vec<ConfigIssue>,
    pub touches: Vec<guard::Touch>,
    pub effect: Effect,
}

impl KindInfo {
    pub(crate) fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }
}

fn check_kind<K: StepKind>(
    with: &serde_json::Value,
    quiet: &dyn Fn(&str) -> bool,
) -> Result<Inspection, Vec<TypeError>> {
    let typed = type_all::<K>(with, quiet);
    // Settings typed with entries taken out would check against defaults the user did not
    // write (a cascade of messages, a weaker effect): only a whole typing is inspected.
    let (Some(config), true) = (typed.value, typed.removed.is_empty()) else {
        return Err(typed.errors);
    };
    Ok(Inspection {
        issues: config.check(),
        touches: config.touches(),
        effect: config.effect(),
    })
}

fn schema_of<K: StepKind>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<K>()
}

macro_rules! registry {
    ($($name:literal => $variant:ident($ty:ty)),* $(,)?) => {
        /// Every step kind, closed: a playbook step is one of these, tagged by `kind`
        /// with its settings under `with`.
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(tag = "kind", content = "with")]
        pub(crate) enum StepConfig {
            $(#[serde(rename = $name)] $variant($ty),)*
        }

        /// The registry, in the order `drrun kinds` lists them.
        pub(crate) static KINDS: &[KindInfo] = &[
            $(KindInfo {
                name: <$ty as StepKind>::NAME,
                summary: <$ty as StepKind>::SUMMARY,
                effect: <$ty as StepKind>::EFFECT,
                example: <$ty as StepKind>::EXAMPLE,
                outputs: <$ty as StepKind>::OUTPUTS,
                evidence: <$ty as StepKind>::EVIDENCE,
                deferred: <$ty as StepKind>::DEFERRED,
                still_holds: <$ty as StepKind>::STILL_HOLDS,
                schema: schema_of::<$ty>,
                check: check_kind::<$ty>,
            },)*
        ];

        impl StepConfig {
            /// Types the rendered `with` of a step of kind `kind`.
            pub(crate) fn from_with(
                kind: &str,
                with: serde_json::Value,
            ) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
                match kind {
                    $($name => serde_path_to_error::deserialize(with).map(Self::$variant),)*
                    other => unreachable!("kind `{other}` was checked at compile time"),
                }
            }

            pub(crate) fn api_rules(&self) -> Vec<access::ApiRule> {
                match self {
                    $(Self::$variant(c) => c.api_rules(),)*
                }
            }

            pub(crate) async fn preview(&self, ctx: &PreviewCtx) -> Preview {
                match self {
                    $(Self::$variant(c) => c.preview(ctx).await,)*
                }
            }

            pub(crate) async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
                match self {
                    $(Self::$variant(c) => c.run(ctx).await,)*
                }
            }
        }

        #[cfg(test)]
        #[test]
        fn registry_names_match_kinds() {
            $(assert_eq!($name, <$ty as StepKind>::NAME);)*
        }
    };
}

registry! {
    "exec" => Exec(exec::Exec),
    "s3.fetch" => S3Fetch(s3::S3Fetch),
    "s3.compare" => S3Compare(s3::S3Compare),
    "pg.restore" => PgRestore(pg::PgRestore),
    "pg.sql" => PgSql(pg::PgSql),
    "kube.image" => KubeImage(kube::KubeImage),
    "kube.deploy" => KubeDeploy(kube::KubeDeploy),
    "kube.job" => KubeJob(kube::KubeJob),
    "kube.scale" => KubeScale(kube::KubeScale),
    "http.smoke" => HttpSmoke(http::HttpSmoke),
}

pub(crate) fn find_kind(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.name == name)
}
