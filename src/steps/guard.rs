//! Guards: namespaces, hosts and databases no step may touch. Kinds check them before
//! the first request is sent.

use serde::Serialize;

use crate::outcome::{Failure, FailureClass};

/// Guard patterns after templating. `*` matches any run of characters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Guards {
    pub kube_namespaces: Vec<String>,
    pub pg_hosts: Vec<String>,
    pub pg_databases: Vec<String>,
}

/// Something a step would touch that guards may protect, with the settings it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Writes in this namespace (reading a guarded one is allowed).
    KubeNamespace {
        namespace: String,
        field: &'static str,
    },
    /// Connects to this database on this host.
    Pg {
        host: String,
        database: String,
        /// The settings the connection is built from (`url`, `host`, `database`, ...).
        fields: &'static [&'static str],
    },
}

impl Touch {
    /// The settings this touch is decided by.
    pub(crate) fn fields(&self) -> &[&'static str] {
        match self {
            Self::KubeNamespace { field, .. } => std::slice::from_ref(field),
            Self::Pg { fields, .. } => fields,
        }
    }
}

impl Guards {
    /// Whether the guards allow `touch`.
    pub(crate) fn check(&self, touch: &Touch) -> Result<(), Failure> {
        match touch {
            Touch::KubeNamespace { namespace, .. } => self.check_kube_namespace(namespace),
            Touch::Pg { host, database, .. } => self.check_pg(host, database),
        }
    }

    pub(crate) fn check_kube_namespace(&self, namespace: &str) -> Result<(), Failure> {
        match self.kube_namespaces.iter().find(|p| matches(p, namespace)) {
            Some(p) => Err(refusal(
                format!("Kubernetes namespace `{namespace}`"),
                p,
                "guards.kube_namespaces",
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn check_pg(&self, host: &str, database: &str) -> Result<(), Failure> {
        if let Some(p) = self.pg_hosts.iter().find(|p| matches(p, host)) {
            return Err(refusal(
                format!("PostgreSQL host `{host}`"),
                p,
                "guards.pg_hosts",
            ));
        }
        if let Some(p) = self.pg_databases.iter().find(|p| matches(p, database)) {
            return Err(refusal(
                format!("PostgreSQL database `{database}`"),
                p,
                "guards.pg_databases",
            ));
        }
        Ok(())
    }
}

fn refusal(what: String, pattern: &str, field: &str) -> Failure {
    Failure::new(
        FailureClass::Guard,
        format!("refusing to touch {what}: it matches `{pattern}` in {field}; nothing was sent"),
    )
}

/// Glob match with `*` only, case-sensitive (namespaces and database names are).
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(matches("prod", "prod"));
        assert!(!matches("prod", "prod2"));
        assert!(matches("*-production", "acme-production"));
        assert!(!matches("*-production", "acme-dr"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("ab*ba", "aba"));
    }

    #[test]
    fn refuses_guarded_namespace() {
        let g = Guards {
            kube_namespaces: vec!["*-production".into()],
            ..Default::default()
        };
        let err = g.check_kube_namespace("acme-production").unwrap_err();
        assert_eq!(err.class, FailureClass::Guard);
        assert!(err.message.contains("`acme-production`"), "{}", err.message);
        assert!(g.check_kube_namespace("acme-dr").is_ok());
    }
}
