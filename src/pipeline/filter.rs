//! `--include` / `--exclude`: glob patterns over an object's name below the source
//! root. `*` also matches `/` (as in the AWS CLI); an object is processed if it matches
//! some include pattern (or none are given) and no exclude pattern.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::Error;

/// Compiled include and exclude patterns.
#[derive(Clone, Debug, Default)]
pub struct ObjectFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl ObjectFilter {
    /// Compiles the patterns; a malformed one is a configuration error.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, Error> {
        Ok(Self {
            include: compile(include, "--include")?,
            exclude: compile(exclude, "--exclude")?,
        })
    }

    /// Whether the object named `relative` is processed.
    pub fn accepts(&self, relative: impl AsRef<std::path::Path>) -> bool {
        let relative = relative.as_ref();
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match(relative))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|set| set.is_match(relative))
    }
}

fn compile(patterns: &[String], flag: &str) -> Result<Option<GlobSet>, Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(Glob::new(p).map_err(|e| Error::Config(format!("{flag} {p:?}: {e}")))?);
    }
    set.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("{flag}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_then_exclude() {
        let f = ObjectFilter::new(&["*.csv".into(), "logs/**".into()], &["*tmp*".into()]).unwrap();
        assert!(f.accepts("a/b/data.csv"));
        assert!(f.accepts("logs/2024/x.log"));
        assert!(!f.accepts("a/data.json"));
        assert!(!f.accepts("a/tmp/data.csv"));
        assert!(ObjectFilter::default().accepts("anything"));
        assert!(ObjectFilter::new(&["[".into()], &[]).is_err());
    }
}
