//! `checksums.txt` (the `sha256sum` format, so `sha256sum -c checksums.txt` works) and
//! the release's trusted comment (`version:VER<TAB>timestamp:TS[<TAB>expires:TS]`).
//! Both are parsed only after the signature over them has verified, but are still
//! parsed as hostile text: bounded, strict, never panicking (fuzz target `release_meta`).

use integrity_common::Sha256Digest;

/// A bundle's `checksums.txt` larger than this is refused unread.
pub const MAX_CHECKSUMS_BYTES: u64 = 64 << 10;

/// The files of a bundle of version `version`, as `checksums.txt` must list them.
pub fn bundle_files(version: &str) -> [String; 4] {
    [
        format!("core-{version}.tar.zst"),
        format!("modules-{version}.tar.zst"),
        format!("manifest-{version}.json"),
        format!("sbom-{version}.json"),
    ]
}

/// `sha256sum` output for `files` (name, digest), in the given order.
pub fn format(files: &[(String, Sha256Digest)]) -> String {
    files
        .iter()
        .map(|(name, digest)| format!("{}  {name}\n", digest.to_hex()))
        .collect()
}

/// Parses `checksums.txt`: lines `HEX  NAME` or `HEX *NAME` (sha256sum's binary
/// marker), a plain file name (no `/`, no leading `.`), each name once.
pub fn parse(text: &[u8]) -> Result<Vec<(String, Sha256Digest)>, String> {
    if text.len() as u64 > MAX_CHECKSUMS_BYTES {
        return Err("checksums.txt is too large".into());
    }
    let text = std::str::from_utf8(text).map_err(|_| "checksums.txt is not UTF-8".to_string())?;
    let mut files: Vec<(String, Sha256Digest)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        if line.is_empty() {
            continue;
        }
        let (hex, rest) = line
            .split_at_checked(64)
            .ok_or_else(|| format!("checksums.txt line {number}: not `SHA256  NAME`"))?;
        let digest = Sha256Digest::from_hex(hex)
            .ok_or_else(|| format!("checksums.txt line {number}: not a SHA-256 digest"))?;
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| format!("checksums.txt line {number}: not `SHA256  NAME`"))?;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !plain {
            return Err(format!(
                "checksums.txt line {number}: {name:?} is not a plain file name"
            ));
        }
        if files.iter().any(|(seen, _)| seen == name) {
            return Err(format!("checksums.txt line {number}: {name} listed twice"));
        }
        files.push((name.to_owned(), digest));
    }
    Ok(files)
}

/// What a release signature's trusted comment vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseClaim {
    pub version: semver::Version,
    /// ISO 8601 UTC; after it the bundle is refused (freeze attack).
    pub expires: Option<String>,
}

/// The trusted comment of a release signature.
pub fn release_comment(version: &str, timestamp: &str, expires: Option<&str>) -> String {
    let mut comment = format!("version:{version}\ttimestamp:{timestamp}");
    if let Some(expires) = expires {
        comment.push_str("\texpires:");
        comment.push_str(expires);
    }
    comment
}

/// Reads `version:` (required, semver, once) and `expires:` (optional, ISO 8601 UTC)
/// from a verified trusted comment.
pub fn parse_release_comment(comment: &str) -> Result<ReleaseClaim, String> {
    let mut version = None;
    let mut expires = None;
    for token in comment.split(['\t', ' ']) {
        if let Some(value) = token.strip_prefix("version:") {
            if version.is_some() {
                return Err("the trusted comment names two versions".into());
            }
            version = Some(
                semver::Version::parse(value)
                    .map_err(|e| format!("the trusted comment's version {value:?}: {e}"))?,
            );
        } else if let Some(value) = token.strip_prefix("expires:") {
            if expires.is_some() {
                return Err("the trusted comment names two expiry dates".into());
            }
            integrity_common::validate_timestamp(value)?;
            expires = Some(value.to_owned());
        }
    }
    let version = version.ok_or("the trusted comment names no version (version:VER)")?;
    Ok(ReleaseClaim { version, expires })
}

/// True when `expires` (ISO 8601 UTC) is in the past at `now` (same format).
pub fn is_expired(expires: &str, now: &str) -> bool {
    match (
        humantime::parse_rfc3339(expires),
        humantime::parse_rfc3339(now),
    ) {
        (Ok(expires), Ok(now)) => expires <= now,
        _ => true,
    }
}

/// Checks a release version is usable as a directory name and a semver.
pub fn parse_version(text: &str) -> Result<semver::Version, String> {
    let version =
        semver::Version::parse(text).map_err(|e| format!("version {text:?} is not semver: {e}"))?;
    if text == crate::layout::EMPTY_RELEASE || text.len() > 128 {
        return Err(format!("version {text:?} is not usable"));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_and_refusals() {
        let digest = Sha256Digest::of(b"x");
        let files = vec![
            ("core-1.0.0.tar.zst".to_string(), digest),
            ("sbom-1.0.0.json".to_string(), digest),
        ];
        assert_eq!(parse(format(&files).as_bytes()).unwrap(), files);
        let hex = digest.to_hex();
        assert!(parse(format!("{hex} *a.tar\n").as_bytes()).is_ok());
        for bad in [
            format!("{hex}  ../x\n"),
            format!("{hex}  /etc/passwd\n"),
            format!("{hex}  .hidden\n"),
            format!("{hex}  a\n{hex}  a\n"),
            format!("{hex} a\n"),
            format!("{}  a\n", &hex[..63]),
            "zz  a\n".to_string(),
            "é".repeat(40),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn release_comments() {
        let claim = parse_release_comment(&release_comment(
            "1.2.3+build.4",
            "2026-01-01T00:00:00Z",
            Some("2027-01-01T00:00:00Z"),
        ))
        .unwrap();
        assert_eq!(claim.version.to_string(), "1.2.3+build.4");
        assert_eq!(claim.expires.as_deref(), Some("2027-01-01T00:00:00Z"));
        assert!(parse_release_comment("timestamp:1").is_err());
        assert!(parse_release_comment("version:1.0.0 version:2.0.0").is_err());
        assert!(parse_release_comment("version:x").is_err());
        assert!(parse_release_comment("version:1.0.0\texpires:soon").is_err());
        assert!(is_expired("2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"));
        assert!(!is_expired("2027-01-01T00:00:00Z", "2026-06-01T00:00:00Z"));
    }
}
