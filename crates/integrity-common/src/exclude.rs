//! Exclusions: paths (relative to the scanned root) that are not scanned, matched on
//! whole path components, so excluding `/proc` skips `/proc` and `/proc/1` but scans
//! `/procfoo`. One list for collector, agent and guard (ARCHITECTURE.md: Scanner).

use crate::manifest::validate_path;
use std::collections::HashSet;

/// The volatile trees the seed excludes by default.
pub const DEFAULT_EXCLUSIONS: [&str; 7] = [
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log",
];

/// A set of excluded paths. The excluded path itself and everything below it are
/// skipped.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    paths: HashSet<Box<[u8]>>,
}

impl Exclusions {
    /// No exclusions at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The seed's default list.
    pub fn defaults() -> Self {
        let mut exclusions = Self::none();
        for path in DEFAULT_EXCLUSIONS {
            exclusions
                .add(path.as_bytes())
                .expect("default exclusions are valid");
        }
        exclusions
    }

    /// What the `--exclude PATH`… and `--no-default-excludes` flags of the collector,
    /// the agent and the guard mean: the default list (unless `defaults` is false) plus
    /// `extra`. The error names the offending path.
    pub fn from_flags<'a>(
        defaults: bool,
        extra: impl IntoIterator<Item = &'a std::path::Path>,
    ) -> Result<Self, String> {
        use std::os::unix::ffi::OsStrExt;
        let mut exclusions = if defaults {
            Self::defaults()
        } else {
            Self::none()
        };
        for path in extra {
            exclusions
                .add(path.as_os_str().as_bytes())
                .map_err(|reason| format!("--exclude {}: {reason}", path.display()))?;
        }
        Ok(exclusions)
    }

    /// Adds a path such as `/var/cache`. A trailing `/` is tolerated; the path must
    /// otherwise be absolute and normalized, and cannot be the root itself.
    pub fn add(&mut self, path: &[u8]) -> Result<(), String> {
        let trimmed = match path {
            [rest @ .., b'/'] if !rest.is_empty() => rest,
            _ => path,
        };
        validate_path(trimmed).map_err(|reason| format!("bad exclusion: {reason}"))?;
        if trimmed == b"/" {
            return Err("bad exclusion: the root itself cannot be excluded".into());
        }
        self.paths.insert(trimmed.into());
        Ok(())
    }

    /// Whether `path` is excluded. The walker asks for every path it meets and does not
    /// descend into excluded directories, so an exact match is enough there;
    /// [`Exclusions::covers`] also answers for paths below an excluded one.
    pub fn is_excluded(&self, path: &[u8]) -> bool {
        self.paths.contains(path)
    }

    /// Whether `path` or any of its ancestors is excluded.
    pub fn covers(&self, path: &[u8]) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        let mut end = path.len();
        loop {
            if self.paths.contains(&path[..end]) {
                return true;
            }
            match path[..end].iter().rposition(|&b| b == b'/') {
                Some(0) | None => return false,
                Some(slash) => end = slash,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_flags_is_what_the_command_lines_mean() {
        use std::path::Path;
        let defaults = Exclusions::from_flags(true, [Path::new("/srv/cache/")]).unwrap();
        assert!(defaults.is_excluded(b"/proc") && defaults.is_excluded(b"/srv/cache"));
        let only = Exclusions::from_flags(false, [Path::new("/srv")]).unwrap();
        assert!(only.is_excluded(b"/srv") && !only.is_excluded(b"/proc"));
        let error = Exclusions::from_flags(true, [Path::new("relative")]).unwrap_err();
        assert!(error.starts_with("--exclude relative: "), "{error}");
    }

    #[test]
    fn whole_components_only() {
        let exclusions = Exclusions::defaults();
        assert!(exclusions.covers(b"/proc"));
        assert!(exclusions.covers(b"/proc/1/status"));
        assert!(!exclusions.covers(b"/procfoo"));
        assert!(!exclusions.covers(b"/procfoo/x"));
        assert!(exclusions.covers(b"/var/log/syslog"));
        assert!(!exclusions.covers(b"/var/logs"));
        assert!(!exclusions.covers(b"/var"));
        assert!(!exclusions.covers(b"/"));
    }

    #[test]
    fn bad_exclusions_are_refused() {
        let mut exclusions = Exclusions::none();
        assert!(exclusions.add(b"relative").is_err());
        assert!(exclusions.add(b"/a/../b").is_err());
        assert!(exclusions.add(b"/").is_err());
        assert!(exclusions.add(b"/srv/cache/").is_ok());
        assert!(exclusions.covers(b"/srv/cache/x"));
    }
}
