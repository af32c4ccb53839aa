//! Where the PostgreSQL password comes from, in this order: the URL (warned about: a
//! URL shows in process lists), `--store-password-file`, `PGPASSWORD`, then the
//! password file libpq reads (`PGPASSFILE`, else `~/.pgpass`), with libpq's rules:
//! lines `host:port:database:user:password`, `*` matches anything, `\:` and `\\`
//! escape, the first matching line wins, and a file others can read is ignored.
//! (`tokio-postgres` reads none of these but the URL: written here, it is short.)

use super::StoreError;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Sets the password of `config` unless its URL has one.
pub(super) fn resolve(
    config: &mut ::postgres::Config,
    file: Option<&std::path::Path>,
) -> Result<(), StoreError> {
    if config.get_password().is_some() {
        tracing::warn!(
            "the PostgreSQL URL holds a password: it shows in process lists and configs; \
             prefer --store-password-file, PGPASSWORD or ~/.pgpass"
        );
        return Ok(());
    }
    if let Some(path) = file {
        let secret = integrity_common::secret::read_secret(path, "store password file")
            .map_err(|error| StoreError(error.to_string()))?;
        if let Some(warning) = secret.warning() {
            tracing::warn!("{warning}");
        }
        let password = secret
            .first_line()
            .map_err(|error| StoreError(error.to_string()))?;
        config.password(password.trim_end_matches('\r'));
        return Ok(());
    }
    if let Some(password) = std::env::var_os("PGPASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        config.password(password.as_bytes());
        return Ok(());
    }
    if let Some(password) = from_pgpass(config) {
        config.password(password);
    }
    Ok(())
}

fn pgpass_path() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")),
    }
}

/// The password of the first line of the password file matching `config`.
fn from_pgpass(config: &::postgres::Config) -> Option<String> {
    let path = pgpass_path()?;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "{} is ignored: others may read it (chmod 0600, as libpq requires)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(name)) => name.clone(),
        // libpq matches a unix socket as "localhost".
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().map(str::to_owned).unwrap_or_default();
    let database = config
        .get_dbname()
        .map_or_else(|| user.clone(), str::to_owned);
    lookup(&text, [&host, &port, &database, &user])
}

/// The password of the first line of `text` whose four fields match `wanted`.
fn lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields = split(line);
            (fields.len() == 5
                && fields[..4]
                    .iter()
                    .zip(wanted)
                    .all(|(field, want)| field == "*" || field == want))
            .then(|| fields[4].clone())
        })
        .next()
}

/// A line's fields, split at unescaped colons, escapes removed.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let text = "# comment\n\
                    db.example:5432:fleet:bp:first\n\
                    *:*:fleet:bp:sec\\:ond\\\\\n\
                    *:*:*:*:any\n";
        assert_eq!(
            lookup(text, ["db.example", "5432", "fleet", "bp"]).as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, ["localhost", "5433", "fleet", "bp"]).as_deref(),
            Some("sec:ond\\")
        );
        assert_eq!(
            lookup(text, ["h", "1", "other", "x"]).as_deref(),
            Some("any")
        );
        assert_eq!(lookup("h:1:d:u\n", ["h", "1", "d", "u"]), None);
        // A colon in the password needs no escape once the fifth field started.
        assert_eq!(split("h:1:d:u:a:b"), ["h", "1", "d", "u", "a:b"]);
    }
}
