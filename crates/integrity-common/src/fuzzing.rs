//! The checks behind the fuzz targets (`fuzz/`), kept here so plain `cargo test`
//! replays the fuzz corpus with exactly the same assertions (tests/fuzz_corpus.rs).

use crate::exclude::Exclusions;
use crate::manifest::Baseline;
use crate::pathenc;
use crate::policy::{self, Checks, Policy, NO_BOUND};

/// Parses `data` as a manifest. A document that parses must validate, be sorted and
/// unique, and survive a write/parse round trip unchanged, byte for byte (its `policy`
/// included); a policy it carries must also pass [`check_policy_paths`].
pub fn check_manifest_bytes(data: &[u8]) -> Option<Baseline> {
    let baseline = Baseline::from_json_slice(data).ok()?;
    baseline
        .validate()
        .expect("a parsed manifest must pass validate()");
    assert!(
        baseline
            .entries
            .windows(2)
            .all(|pair| pair[0].path < pair[1].path),
        "entries must be strictly sorted"
    );
    let written = baseline.to_json_bytes();
    let reparsed = Baseline::from_json_slice(&written).expect("our own output must parse");
    assert_eq!(reparsed, baseline, "round trip changed the manifest");
    assert_eq!(
        reparsed.to_json_bytes(),
        written,
        "writing is not deterministic"
    );
    if let Some(policy) = &baseline.policy {
        check_policy_paths(policy);
    }
    Some(baseline)
}

/// Paths every policy is asked about, besides those made from its own globs.
const FIXED_PROBES: [&[u8]; 7] = [
    b"/",
    b"/etc",
    b"/etc/hostname",
    b"/var/log/dpkg.log",
    b"/usr/bin/ls",
    b"/home/u/\xff\xfe.txt",
    b"/var/lib/cloud/instance/\x80",
];

/// Most probes made from one policy's globs (bounds the time of one input).
const MAX_GLOB_PROBES: usize = 48;

/// Parses `data` (when it is UTF-8) as a TOML policy; must never panic. A policy that
/// parses keeps the documented limits, travels inside a manifest as JSON and comes back
/// equal, and answers [`check_policy_paths`] consistently.
pub fn check_policy(data: &[u8]) -> Option<Policy> {
    let text = std::str::from_utf8(data).ok()?;
    let policy = Policy::from_toml_str(text).ok()?;
    check_policy_shape(&policy);

    let json = serde_json::to_vec(&policy).expect("a policy serializes to JSON");
    let mut document = br#"{"image_id":"a","timestamp":"2026-11-23T07:31:43Z","policy":"#.to_vec();
    document.extend_from_slice(&json);
    document.extend_from_slice(br#","entries":[]}"#);
    let baseline = Baseline::from_json_slice(&document).unwrap_or_else(|error| {
        panic!("a parsed policy, written as JSON in a manifest, is refused: {error}")
    });
    let carried = baseline
        .policy
        .as_ref()
        .expect("the manifest lost its policy");
    assert_eq!(carried, &policy, "the JSON round trip changed the policy");
    assert_eq!(
        serde_json::to_vec(carried).expect("a policy serializes to JSON"),
        json,
        "writing a policy as JSON is not deterministic"
    );
    check_manifest_bytes(&document).expect("a manifest holding a parsed policy must pass");

    check_policy_paths(&policy);
    Some(policy)
}

/// What `Policy::new` promises about every policy it accepts.
fn check_policy_shape(policy: &Policy) {
    assert!(policy.len() <= policy::MAX_RULES, "too many rules");
    let mut globs = 0;
    for rule in policy.rules() {
        assert!(
            !rule.paths.is_empty() && rule.paths.len() <= policy::MAX_PATTERNS_PER_RULE,
            "a rule with {} globs",
            rule.paths.len()
        );
        globs += rule.paths.len();
        for glob in &rule.paths {
            assert!(
                glob.starts_with('/') || glob.starts_with("**"),
                "glob {glob:?} is not rooted"
            );
            assert!(!glob.contains('\0'), "glob {glob:?} holds a NUL");
        }
        if rule.ignore {
            assert!(
                rule.check == Checks::NONE && !rule.added_ok && !rule.growing,
                "an ignore rule with checks: {rule:?}"
            );
        }
        if rule.growing {
            assert!(
                rule.check.contains(Checks::CONTENT),
                "growing without content: {rule:?}"
            );
        }
        for text in [&rule.name, &rule.reason].into_iter().flatten() {
            assert!(
                !text.is_empty() && !text.chars().any(char::is_control),
                "a name or reason {text:?} got through"
            );
        }
    }
    assert!(globs <= policy::MAX_PATTERNS, "too many globs");
}

/// The probe paths for one policy: the fixed ones, and for its first globs the glob's
/// own text as a path (with `**`/`*`/`?` filled in), that path's child, and the
/// directory of the glob's literal prefix.
fn probes(policy: &Policy) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = FIXED_PROBES.iter().map(|path| path.to_vec()).collect();
    let globs = policy.rules().iter().flat_map(|rule| &rule.paths);
    for glob in globs.take(MAX_GLOB_PROBES / 3) {
        let mut filled = Vec::with_capacity(glob.len() + 1);
        if !glob.starts_with('/') {
            filled.push(b'/');
        }
        let mut bytes = glob.bytes().peekable();
        while let Some(byte) = bytes.next() {
            match byte {
                b'*' => {
                    while bytes.peek() == Some(&b'*') {
                        bytes.next();
                    }
                    filled.push(b'x');
                }
                b'?' => filled.push(b'q'),
                b'\\' => {}
                other => filled.push(other),
            }
        }
        let cut = glob
            .bytes()
            .position(|b| matches!(b, b'*' | b'?' | b'[' | b'{' | b'\\'))
            .unwrap_or(glob.len());
        let prefix = &glob.as_bytes()[..cut];
        if let Some(slash) = prefix.iter().rposition(|&b| b == b'/') {
            if slash > 0 {
                out.push(prefix[..slash].to_vec());
            }
        }
        let mut child = filled.clone();
        child.extend_from_slice(b"/c");
        out.push(filled);
        out.push(child);
    }
    out.retain(|path| is_probe_path(path));
    out
}

/// Absolute, no empty component, no trailing `/` (except the root): the paths a walk
/// can meet.
fn is_probe_path(path: &[u8]) -> bool {
    path == b"/"
        || (path.first() == Some(&b'/')
            && path.last() != Some(&b'/')
            && !path.windows(2).any(|pair| pair == b"//"))
}

/// The ancestors of `path` that the walk visits before it, shallowest first (the root
/// excluded: the walk starts by listing it).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, &byte)| byte == b'/')
        .map(move |(at, _)| &path[..at])
}

/// `rule_for`, `select`, `selected` and `reaches_below` on the probe paths: no panic,
/// and `selected` agrees both with a walk of [`policy::select`] from the root (every
/// ancestor of a recorded path is descended into) and with the module documentation's
/// semantics, computed independently from `rule_for` alone:
///
/// * a path whose first matching rule is `ignore` is not recorded;
/// * a path whose first matching rule `i` lets it through is recorded unless an ancestor
///   is ignored by a rule placed before `i` (exclusions rank after every rule);
/// * a path no rule matches is recorded unless an ancestor is ignored, or it or an
///   ancestor is excluded.
pub fn check_policy_paths(policy: &Policy) {
    let rules = policy.rules();
    let ignored_before = |path: &[u8], limit: usize| {
        policy
            .rule_for(path)
            .is_some_and(|index| index < limit && rules[index].ignore)
    };
    for exclusions in [Exclusions::defaults(), Exclusions::none()] {
        for path in probes(policy) {
            let first = policy.rule_for(&path);
            if let Some(index) = first {
                assert!(
                    index < rules.len(),
                    "rule_for gave {index} of {}",
                    rules.len()
                );
            }
            assert!(
                !policy.reaches_below(&path, 0),
                "no rule is placed before rule 0"
            );
            let _ = policy.reaches_below(&path, NO_BOUND);
            let _ = policy::select(Some(policy), &exclusions, &path, NO_BOUND);
            let _ = policy::select(Some(policy), &exclusions, &path, 0);
            let selected = policy::selected(Some(policy), &exclusions, &path);
            if path == b"/" {
                assert!(selected, "the root is always recorded");
                continue;
            }

            // The walk, as the scanner does it.
            let mut bound = NO_BOUND;
            let mut descended = true;
            for ancestor in ancestors(&path) {
                let here = policy::select(Some(policy), &exclusions, ancestor, bound);
                if !here.descend {
                    descended = false;
                    break;
                }
                assert!(
                    here.bound <= bound,
                    "a bound grew at {}",
                    pathenc::encode(ancestor)
                );
                bound = here.bound;
            }
            let walked =
                descended && policy::select(Some(policy), &exclusions, &path, bound).record;
            assert_eq!(
                selected,
                walked,
                "selected and the walk disagree on {}",
                pathenc::encode(&path)
            );
            if selected {
                assert!(
                    descended,
                    "{} is recorded below a directory the walk skips",
                    pathenc::encode(&path)
                );
            }

            // The documented semantics.
            let expected = match first {
                Some(index) if rules[index].ignore => false,
                Some(index) => !ancestors(&path).any(|dir| ignored_before(dir, index)),
                None => {
                    !exclusions.covers(&path)
                        && !ancestors(&path).any(|dir| ignored_before(dir, NO_BOUND))
                }
            };
            assert_eq!(
                selected,
                expected,
                "{} is {} but the first matching rule is {first:?} of {rules:?}",
                pathenc::encode(&path),
                if selected { "recorded" } else { "not recorded" },
            );
        }
    }
}

/// Raw bytes round-trip through the encoding; any text that decodes is canonical.
pub fn check_path_encoding(data: &[u8]) {
    let encoded = pathenc::encode(data);
    let decoded = pathenc::decode(&encoded).expect("encode output must decode");
    assert_eq!(&*decoded, data, "round trip lost bytes");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = pathenc::decode(text) {
            assert_eq!(
                pathenc::encode(&bytes),
                text,
                "two texts decode to one path"
            );
        }
    }
}
