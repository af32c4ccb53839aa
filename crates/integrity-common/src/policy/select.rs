//! What a walk records under a policy: [`select`] decides one path from its parent's
//! `bound`, [`selected`] applies it from the root down (see the module documentation of
//! `policy` for the rules).

use super::Policy;
use crate::exclude::Exclusions;

/// "Not bounded": no ignored ancestor.
pub const NO_BOUND: usize = usize::MAX;

/// What the walk does with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Select {
    /// The path is an entry of the manifest.
    pub record: bool,
    /// (Directories) the walk lists it.
    pub descend: bool,
    /// Passed to the children: only rules before it can let them through.
    pub bound: usize,
}

/// Decides one path, given the `bound` its parent passed down ([`NO_BOUND`] at the
/// root). See the module documentation for the rules.
pub fn select(
    policy: Option<&Policy>,
    exclusions: &Exclusions,
    path: &[u8],
    bound: usize,
) -> Select {
    let excluded_at = policy.map_or(0, Policy::len);
    let own_bound = if exclusions.is_excluded(path) {
        bound.min(excluded_at)
    } else {
        bound
    };
    let first = policy
        .and_then(|policy| policy.rule_for(path))
        .filter(|&index| index < bound);
    let (record, bound) = match (first, policy) {
        (Some(index), Some(policy)) if policy.rules[index].ignore => (false, own_bound.min(index)),
        (Some(_), _) => (true, own_bound),
        (None, _) => (own_bound == NO_BOUND, own_bound),
    };
    let descend = record
        || (bound != NO_BOUND && policy.is_some_and(|policy| policy.reaches_below(path, bound)));
    Select {
        record,
        descend,
        bound,
    }
}

/// Whether a walk of the root records `path`: [`select`] applied from the root down.
pub fn selected(policy: Option<&Policy>, exclusions: &Exclusions, path: &[u8]) -> bool {
    walk(policy, exclusions, path).scanned
}

/// [`select`] applied from the root down to `path`.
pub(super) struct Walked {
    pub(super) scanned: bool,
    /// The bound in force at `path`.
    pub(super) bound: usize,
    /// Length of the prefix of `path` where that bound was set (what stopped it).
    pub(super) blocked_len: usize,
}

pub(super) fn walk(policy: Option<&Policy>, exclusions: &Exclusions, path: &[u8]) -> Walked {
    let mut walked = Walked {
        scanned: true,
        bound: NO_BOUND,
        blocked_len: 0,
    };
    if path == b"/" {
        return walked;
    }
    let mut end = 0;
    loop {
        let next = path[end + 1..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(path.len(), |at| end + 1 + at);
        let here = select(policy, exclusions, &path[..next], walked.bound);
        if here.bound < walked.bound {
            walked.blocked_len = next;
        }
        walked.bound = here.bound;
        if next == path.len() || !here.descend {
            walked.scanned = next == path.len() && here.record;
            return walked;
        }
        end = next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{policy, SAMPLE};
    use super::*;

    #[test]
    fn ignored_trees_are_not_walked_unless_an_earlier_rule_reaches_in() {
        let p = policy(SAMPLE);
        let ex = Exclusions::defaults();
        let sel = |path: &str| selected(Some(&p), &ex, path.as_bytes());
        assert!(sel("/var/lib/cloud"));
        assert!(!sel("/var/lib/cloud/instance"));
        assert!(!sel("/var/lib/cloud/instance/user-data.txt"));
        // An earlier rule reaches below the ignored directory.
        assert!(!sel("/var/lib/cloud/scripts"), "ignored itself, but walked");
        assert!(sel("/var/lib/cloud/scripts/per-boot/x"));
        let at = |path: &str| select(Some(&p), &ex, path.as_bytes(), NO_BOUND);
        assert!(at("/var/lib/cloud/scripts").descend);
        assert!(!at("/var/lib/cloud/instance").descend);
        // The exclusions come after every rule: one file inside /var/log is reached.
        assert!(sel("/var/log/dpkg.log"));
        assert!(!sel("/var/log"));
        assert!(!sel("/var/log/syslog"));
        assert!(!sel("/var/log/apt/history.log"));
        assert!(at("/var/log").descend);
        assert!(!at("/proc").descend, "no rule reaches into /proc");
        assert!(sel("/usr/bin/ls") && sel("/etc/passwd") && sel("/"));
    }

    #[test]
    fn without_a_policy_exclusions_behave_as_before() {
        let ex = Exclusions::defaults();
        for (path, want) in [
            ("/proc", false),
            ("/proc/1", false),
            ("/procfoo", true),
            ("/var/log/x", false),
            ("/var", true),
        ] {
            assert_eq!(selected(None, &ex, path.as_bytes()), want, "{path}");
            assert_eq!(
                selected(Some(&Policy::empty()), &ex, path.as_bytes()),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn a_rule_for_an_excluded_directory_itself_does_not_open_its_tree() {
        let p = policy("[[rule]]\npaths = [\"/var/log\"]\ncheck = [\"mode\"]\n");
        let ex = Exclusions::defaults();
        assert!(selected(Some(&p), &ex, b"/var/log"));
        assert!(!selected(Some(&p), &ex, b"/var/log/syslog"));
    }
}
