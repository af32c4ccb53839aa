//! The seed's developer conveniences without touching the core (seed §11):
//!
//! * `render`: the core's Jinja2-style templates (`core/conf/**/*.j2`, rendered with
//!   minijinja, undefined variables are errors) into `state/conf.d/` (same relative
//!   path, `.j2` dropped). Context: `version`, `root`, `flags` (flags.json) and every
//!   `--var KEY=VALUE`. Unchanged outputs are not rewritten.
//! * `flags get|set|unset|list`: `state/conf.d/flags.json`, a JSON object; every change
//!   is a record in the tamper-evident security log (old and new value).
//!
//! `state/conf.d` belongs to the service user; root reads and writes it only through
//! directory handles (see [`conf_dir`]).

use crate::layout::Layout;
use anyhow::{bail, Context};
use integrity_common::handles;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub fn flags_path(layout: &Layout) -> PathBuf {
    layout.path(CONF_DIR).join(FLAGS_FILE)
}

/// `state/conf.d`, relative to the root: owned by the service user, so root reaches
/// into it only through handles (ARCHITECTURE.md: Scanner): a symlink planted anywhere on the way,
/// or in place of a file, is refused or replaced, never followed.
const CONF_DIR: &str = "state/conf.d";
const FLAGS_FILE: &str = "flags.json";

pub type Flags = BTreeMap<String, serde_json::Value>;

/// A handle on `state/conf.d` (created when missing) and its owner.
fn conf_dir(layout: &Layout) -> anyhow::Result<(OwnedFd, (u32, u32))> {
    let root = handles::open_dir(&layout.root)
        .with_context(|| format!("cannot open {}", layout.root.display()))?;
    let dir = handles::create_dir_all_beneath(root.as_fd(), CONF_DIR.as_bytes(), 0o750, None)
        .with_context(|| {
            format!(
                "cannot open {} without following a symlink",
                layout.path(CONF_DIR).display()
            )
        })?;
    let meta = handles::fstat(&dir)?;
    Ok((dir, (meta.uid, meta.gid)))
}

/// The bytes of the regular file `rel` below `dir`; `None` when it does not exist. A
/// symlink, FIFO or device there is an error (never followed, never blocks).
fn read_beneath(dir: BorrowedFd<'_>, rel: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    match handles::open_file_beneath(dir, rel) {
        Ok((mut file, _)) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn load_flags(layout: &Layout) -> anyhow::Result<Flags> {
    let path = flags_path(layout);
    let root = handles::open_dir(&layout.root)
        .with_context(|| format!("cannot open {}", layout.root.display()))?;
    let rel = format!("{CONF_DIR}/{FLAGS_FILE}");
    match read_beneath(root.as_fd(), rel.as_bytes()) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a JSON object of flags", path.display())),
        Ok(None) => Ok(Flags::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `rel` below `state/conf.d` atomically, readable by the directory's owner
/// (the service user): missing subdirectories are created (0750, that owner), the
/// file is a fresh `O_EXCL` file (0640, that owner) renamed over the old one.
fn write_conf(
    dir: BorrowedFd<'_>,
    owner: (u32, u32),
    rel: &Path,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let owner = nix::unistd::geteuid().is_root().then_some(owner);
    let rel = rel.as_os_str().as_bytes();
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(cut) => (
            handles::create_dir_all_beneath(dir, &rel[..cut], 0o750, owner)?,
            &rel[cut + 1..],
        ),
        None => (handles::open_dir_beneath(dir, b"")?, rel),
    };
    let name = std::ffi::CString::new(name).context("NUL in a file name")?;
    handles::write_atomic_at(parent.as_fd(), &name, bytes, 0o640, owner)?;
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("flag name {name:?}: 1 to 64 letters, digits, `_`, `.` or `-`");
    }
    Ok(())
}

/// `VALUE` as JSON when it parses (`true`, `3`, `"x"`, `[1]`), else as a string.
pub fn parse_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

pub fn set_flag(
    layout: &Layout,
    name: &str,
    value: Option<serde_json::Value>,
) -> anyhow::Result<bool> {
    check_name(name)?;
    let _lock = crate::release::lock(layout, std::time::Duration::from_secs(10))?;
    crate::seclog::ensure_ready(layout)?;
    let mut flags = load_flags(layout)?;
    let old = flags.get(name).cloned();
    if old == value {
        return Ok(false);
    }
    match &value {
        Some(value) => flags.insert(name.to_owned(), value.clone()),
        None => flags.remove(name),
    };
    let mut bytes = serde_json::to_vec_pretty(&flags)?;
    bytes.push(b'\n');
    let (dir, owner) = conf_dir(layout)?;
    write_conf(dir.as_fd(), owner, Path::new(FLAGS_FILE), &bytes)
        .with_context(|| format!("cannot write {}", flags_path(layout).display()))?;
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unset".into())
    };
    crate::seclog::event(
        layout,
        "flag",
        &format!("flag {name}: {} -> {}", show(&old), show(&value)),
        serde_json::json!({ "name": name, "old": old, "new": value }),
    );
    Ok(true)
}

/// Renders every template of the active core; returns (output, changed) pairs.
pub fn render(layout: &Layout, vars: &[(String, String)]) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let active = layout
        .active_version()?
        .context("the root is not installed")?;
    crate::seclog::ensure_ready(layout)?;
    let conf = layout.release(&active).join("core/conf");
    let mut templates = Vec::new();
    let mut stack = vec![conf.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.file_name().to_string_lossy().ends_with(".j2") {
                templates.push(entry.path());
            }
        }
    }
    templates.sort();
    let mut context: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    context.insert("version".into(), active.clone().into());
    context.insert("root".into(), layout.root.display().to_string().into());
    context.insert("flags".into(), serde_json::to_value(load_flags(layout)?)?);
    for (key, value) in vars {
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || key.is_empty() {
            bail!("--var {key}: names are letters, digits and `_`");
        }
        context.insert(key.clone(), parse_value(value));
    }
    let mut env = minijinja::Environment::new();
    // Semi-strict: printing an undefined variable is an error (a typo fails loudly), an
    // unset flag in `{% if flags.x %}` is false. Configuration files keep their final
    // newline (Jinja2 would drop it).
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    let out_root = layout.path(CONF_DIR);
    let (out_dir, owner) = conf_dir(layout)?;
    let mut results = Vec::new();
    for template in templates {
        let relative = template.strip_prefix(&conf).expect("below conf");
        let source = fs::read_to_string(&template)
            .with_context(|| format!("cannot read {}", template.display()))?;
        let name = relative.to_string_lossy().into_owned();
        let rendered = env
            .render_named_str(&name, &source, minijinja::value::Serde(&context))
            .map_err(|e| anyhow::anyhow!("core/conf/{name}: {e:#}"))?;
        let out_rel = relative.with_extension("");
        let out = out_root.join(&out_rel);
        let current = read_beneath(out_dir.as_fd(), out_rel.as_os_str().as_bytes());
        let changed = current.ok().flatten().as_deref() != Some(rendered.as_bytes());
        if changed {
            write_conf(out_dir.as_fd(), owner, &out_rel, rendered.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        results.push((out, changed));
    }
    let changed: Vec<String> = results
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !changed.is_empty() {
        crate::seclog::event(
            layout,
            "render",
            &format!("rendered {} configuration files of {active}", changed.len()),
            serde_json::json!({ "version": active, "files": changed }),
        );
    }
    Ok(results)
}
