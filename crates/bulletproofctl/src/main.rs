//! `bulletproofctl`: the operator's tool. Keys and signatures (`keygen`, `sign`,
//! `verify`, byte-compatible with the `minisign` command), release bundles
//! (`bundle build`), the root's life cycle (`install`, `update`, `rollback`,
//! `recover`, `status`, `snapshot`). The guard and the log verifier come with their
//! issue.

use bulletproofctl::{
    bundle, conf, guard, install, layout, mounts, release, seclog, snapshot, status, DEFAULT_ROOT,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use integrity_trust::Password;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A signature or key that does not verify; a bundle or version refused.
const EXIT_VERIFY: u8 = 1;
/// Bad arguments, unreadable files, anything else.
const EXIT_ERROR: u8 = 2;
/// An activation failed after the switch and the previous version is active again.
const EXIT_ROLLED_BACK: u8 = 3;

const AFTER_HELP: &str = "\
Keys and signatures are minisign's formats: `minisign -V` verifies what `sign` writes,
and `verify` checks what `minisign -S` writes (prehashed by default; legacy signatures
only with --allow-legacy).

Exit status: 0 success; 1 a signature that does not verify, or a bundle or version
refused (nothing changed); 2 any other error (usage, I/O, configuration); 3 an
activation failed after the switch and the previous version is active again.";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Bulletproof control tool: keys, signatures, signed release bundles, atomic updates and recovery",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a minisign key pair (unencrypted without --password-file, like minisign -W)
    Keygen {
        /// Where to write the secret key (mode 0600; never overwritten)
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        /// Where to write the public key
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Encrypt the secret key with the password on this file's first line
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
    },
    /// Sign FILE, writing FILE.minisig
    Sign {
        /// The file to sign
        file: PathBuf,
        /// The secret key
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        /// Password of an encrypted secret key (first line); without it the password is
        /// asked on the terminal, and refused when there is none
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
        /// The trusted comment [default: timestamp:NOW<TAB>file:NAME<TAB>hashed]
        #[arg(long, value_name = "TEXT")]
        trusted_comment: Option<String>,
    },
    /// Verify FILE against its signature; prints the trusted comment
    Verify {
        /// The signed file
        file: PathBuf,
        /// The public key (minisign .pub file, or the bare base64 line)
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The signature [default: FILE.minisig]
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
        /// Accept legacy (non-prehashed) signatures
        #[arg(long)]
        allow_legacy: bool,
    },
    /// Build a signed release bundle (core/modules tar.zst, manifest, SBOM, checksums.txt, sig.minisig)
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Create the seed's layout under the root, idempotently (a second run changes nothing)
    Install {
        #[command(flatten)]
        root: RootArg,
        /// Owner of the writable directories (state/*, logs/system); must exist
        #[arg(long, value_name = "USER")]
        service_user: Option<String>,
        /// Pin this release public key for the root
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Replace an already pinned, different release key (logged)
        #[arg(long)]
        replace_key: bool,
        /// Apply the mount hardening (read-only releases, noexec writable dirs) and
        /// write it as systemd mount units; auto = as root on /opt/omniscient only
        #[arg(long, value_enum, default_value = "auto")]
        mounts: install::MountMode,
        /// Where the mount units are written
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Print every change that would be made, and make none
        #[arg(long)]
        dry_run: bool,
        /// Where to write the initial key of the security logs (keep it off this host:
        /// `log verify` needs it, an intruder must not have it)
        /// [default: ROOT/install/logkeys/initial.key]
        #[arg(long, value_name = "FILE")]
        log_key_out: Option<PathBuf>,
        /// Do not create the Python venv under ROOT/venv
        #[arg(long)]
        no_venv: bool,
    },
    /// Verify, stage and activate a signed bundle; on any failure the previous version stays active
    Update {
        /// The bundle directory (checksums.txt, sig.minisig, core-VER.tar.zst, …)
        bundle_dir: PathBuf,
        #[command(flatten)]
        root: RootArg,
        /// Release public key [default: the key pinned at install; pinned here if none is]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Activate the version that was active before the current one
    Rollback {
        #[command(flatten)]
        root: RootArg,
        /// Release public key that verifies the kept releases [default: the key pinned at install]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Activate any kept or archived version (an explicit operator decision: may go back)
    Recover {
        /// The version to activate
        #[arg(long, value_name = "VER")]
        to: String,
        #[command(flatten)]
        root: RootArg,
        /// Release public key that verifies the kept releases [default: the key pinned at install]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Show the active version, kept and archived versions, last update and verification
    Status {
        #[command(flatten)]
        root: RootArg,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Verify the active release against its signed manifest and heal it (daemon, or --once)
    #[command(after_help = "\
Exit status of --once: 0 the release matches its signed manifest (or none is active);
1 drift was found and healed (evidence in state/quarantine/), or drift the operator
must act on (the security log's key state is missing or damaged: `log reinit`); 3 drift could not be
healed and the previous version was activated; 2 error, an update holds the root, or
the drift could not be healed at all. The daemon exits 0 on SIGTERM/SIGINT.")]
    Guard {
        #[command(flatten)]
        root: RootArg,
        /// One full check (and heal), then exit
        #[arg(long)]
        once: bool,
        /// Seconds between full checks [default: guard_interval_secs, 60]; filesystem
        /// events are handled as they come
        #[arg(long, value_name = "SECS")]
        interval: Option<u64>,
        /// Release public key that verifies the active release [default: the key pinned at install]
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Render the active core's templates (core/conf/**/*.j2) into state/conf.d/
    Render {
        #[command(flatten)]
        root: RootArg,
        /// A template variable (VALUE is JSON when it parses, else a string); `version`,
        /// `root` and `flags` are always there
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Feature flags in state/conf.d/flags.json (every change is a security-log record)
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
        #[command(flatten)]
        root: RootArg,
    },
    /// Tamper-evident security logs
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Write a signed tar.zst of the active core and modules to archives/
    Snapshot {
        #[command(flatten)]
        root: RootArg,
        /// Signing key [default: the root's host key install/host.key, created when missing]
        #[arg(long, value_name = "FILE")]
        secret_key: Option<PathBuf>,
        /// Password of an encrypted --secret-key (first line of F)
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RootArg {
    /// The bulletproof root
    #[arg(
        long,
        value_name = "ROOT",
        env = "BULLETPROOF_ROOT",
        default_value = DEFAULT_ROOT,
        global = true
    )]
    root: PathBuf,
}

#[derive(Subcommand, Debug)]
enum FlagsCommand {
    /// Print every flag as JSON
    List,
    /// Print one flag's value (exit 1 when it is not set)
    Get {
        /// The flag's name
        name: String,
    },
    /// Set a flag (VALUE is JSON when it parses: true, 3, "x"; else a string)
    Set {
        /// The flag's name
        name: String,
        /// Its value
        value: String,
    },
    /// Remove a flag
    Unset {
        /// The flag's name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Verify a security log's chain: exit 0 and a summary when intact, else the first
    /// bad record's line and what is wrong (edited, missing, inserted, reordered,
    /// truncated), exit 1
    Verify {
        /// The log (several: a rotated file first, then its successor)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The root whose keys to use by default
        #[arg(long, value_name = "ROOT", env = "BULLETPROOF_ROOT", default_value = DEFAULT_ROOT)]
        root: PathBuf,
        /// The initial log key exported at install [default: ROOT/install/logkeys/initial.key]
        #[arg(long, value_name = "FILE")]
        initial_key: Option<PathBuf>,
        /// The host public key that signs checkpoints [default: ROOT/install/host.pub]
        #[arg(long, value_name = "FILE")]
        host_key: Option<PathBuf>,
        /// Fail when the newest record is older than this (a cut-off tail; the guard
        /// writes a heartbeat every cycle)
        #[arg(long, value_name = "SECS")]
        max_age: Option<u64>,
        /// Do not require the signed checkpoint beside the log
        #[arg(long)]
        no_checkpoint: bool,
    },
    /// Start a new epoch of the security logs (after their key state was lost or
    /// damaged: security-relevant commands refuse to run until then). The old chains are
    /// kept as *.closed-TIME; each new chain starts with a record saying why.
    Reinit {
        /// The root (run as root, the owner of ROOT/install)
        #[arg(long, value_name = "ROOT", env = "BULLETPROOF_ROOT", default_value = DEFAULT_ROOT)]
        root: PathBuf,
        /// Where to write the new initial key (keep it off this host)
        /// [default: ROOT/install/logkeys/initial.key]
        #[arg(long, value_name = "FILE")]
        log_key_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Build a reproducible, signed release bundle into --out
    Build {
        /// Release version (semver, e.g. 1.4.0 or 1.4.0+build.7); core/VERSION must say the same
        #[arg(long, value_name = "VER")]
        version: String,
        /// The core tree
        #[arg(long, value_name = "DIR")]
        core: PathBuf,
        /// The modules tree
        #[arg(long, value_name = "DIR")]
        modules: PathBuf,
        /// The release secret key
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        /// Password of an encrypted --secret-key (first line of F); without it the
        /// password is asked on the terminal, and refused when there is none
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
        /// Output directory
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Signed expiry (ISO 8601 UTC); hosts refuse the bundle after it
        #[arg(long, value_name = "TIME")]
        expires: Option<String>,
        /// Owner recorded for every file (what update applies)
        #[arg(long, value_name = "UID:GID", default_value = "0:0")]
        owner: String,
        /// Application name in the SBOM
        #[arg(long, default_value = "omniscient")]
        name: String,
        /// zstd level
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
    },
}

fn main() -> ExitCode {
    cli_dist::maybe_generate(<Cli as clap::CommandFactory>::command);
    let cli = Cli::parse();
    // Commands that write releases enter a private mount namespace first, when the
    // releases are mounted read-only; this must happen before any thread starts.
    if let Command::Update { root, .. }
    | Command::Rollback { root, .. }
    | Command::Recover { root, .. }
    | Command::Guard { root, .. } = &cli.command
    {
        let layout = layout::Layout::new(&root.root);
        if let Err(error) = mounts::writable_releases(&layout) {
            eprintln!("bulletproofctl: error: {error:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    match run(cli.command) {
        // A security record that could not be appended (said on stderr) fails the command.
        Ok(0) if seclog::append_failed() => ExitCode::from(EXIT_ERROR),
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("bulletproofctl: error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Keygen {
            secret_key,
            public_key,
            password_file,
        } => {
            let id = integrity_trust::keygen_with(
                &secret_key,
                &public_key,
                password_file.as_deref(),
                &mut warn_secret,
            )?;
            eprintln!(
                "bulletproofctl: key {id}: secret key {} ({}), public key {}",
                secret_key.display(),
                if password_file.is_some() {
                    "encrypted"
                } else {
                    "unencrypted"
                },
                public_key.display()
            );
            Ok(0)
        }
        Command::Sign {
            file,
            secret_key,
            password_file,
            trusted_comment,
        } => {
            let password = password_of(password_file.as_deref());
            let sk =
                integrity_trust::load_secret_key_with(&secret_key, password, &mut warn_secret)?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let comment = trusted_comment.unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let name = file
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                integrity_trust::default_trusted_comment(&name, now)
            });
            let signature = integrity_trust::sign(&sk, &data, &comment)?;
            let out = integrity_trust::signature_path(&file);
            layout::write_atomically(&out, signature.as_bytes(), 0o644)?;
            eprintln!("bulletproofctl: wrote {}", out.display());
            Ok(0)
        }
        Command::Verify {
            file,
            public_key,
            signature,
            allow_legacy,
        } => {
            let pk = integrity_trust::load_public_key(&public_key)?;
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sig_path = signature.unwrap_or_else(|| integrity_trust::signature_path(&file));
            let text = std::fs::read(&sig_path)
                .with_context(|| format!("cannot read signature {}", sig_path.display()))?;
            let Ok(text) = String::from_utf8(text) else {
                eprintln!(
                    "bulletproofctl: {}: not a minisign signature",
                    sig_path.display()
                );
                return Ok(EXIT_VERIFY);
            };
            match integrity_trust::verify(&pk, &data, &text, allow_legacy) {
                Ok(trusted) => {
                    println!("Signature and comment signature verified");
                    println!("Trusted comment: {trusted}");
                    Ok(0)
                }
                Err(error) => {
                    eprintln!("bulletproofctl: {}: {error}", file.display());
                    Ok(EXIT_VERIFY)
                }
            }
        }
        Command::Bundle {
            command:
                BundleCommand::Build {
                    version,
                    core,
                    modules,
                    secret_key,
                    password_file,
                    out,
                    expires,
                    owner,
                    name,
                    level,
                },
        } => {
            let password = password_of(password_file.as_deref());
            let sk =
                integrity_trust::load_secret_key_with(&secret_key, password, &mut warn_secret)?;
            let built = bundle::build(&bundle::BuildOptions {
                version,
                core,
                modules,
                out: out.clone(),
                secret_key: sk,
                expires,
                owner: parse_owner(&owner)?,
                name,
                level,
            })?;
            for (name, digest) in &built.files {
                println!("{digest}  {name}");
            }
            eprintln!(
                "bulletproofctl: bundle in {}: {} entries, {} bytes of files, signed",
                out.display(),
                built.entries,
                built.bytes
            );
            Ok(0)
        }
        Command::Install {
            root,
            service_user,
            public_key,
            replace_key,
            mounts,
            unit_dir,
            dry_run,
            log_key_out,
            no_venv,
        } => {
            let layout = layout::Layout::new(&root.root);
            let changes = install::install(
                &layout,
                &install::InstallOptions {
                    service_user,
                    public_key,
                    replace_key,
                    mounts,
                    unit_dir,
                    dry_run,
                    log_key_out,
                    no_venv,
                },
            )?;
            if changes.is_empty() {
                println!("{} is installed; nothing to change", layout.root.display());
            } else if dry_run {
                println!("dry run: {} changes would be made, none was", changes.len());
            }
            Ok(0)
        }
        Command::Update {
            bundle_dir,
            root,
            public_key,
        } => release_result(release::update(
            &layout::Layout::new(&root.root),
            &bundle_dir,
            public_key.as_deref(),
        )),
        Command::Rollback { root, public_key } => release_result(release::rollback(
            &layout::Layout::new(&root.root),
            public_key.as_deref(),
        )),
        Command::Recover {
            to,
            root,
            public_key,
        } => release_result(release::recover(
            &layout::Layout::new(&root.root),
            &to,
            public_key.as_deref(),
        )),
        Command::Status { root, json } => status::status(&layout::Layout::new(&root.root), json),
        Command::Guard {
            root,
            once,
            interval,
            public_key,
        } => {
            let layout = layout::Layout::new(&root.root);
            if !once {
                guard::run(&layout, public_key, interval)?;
                return Ok(0);
            }
            Ok(match guard::once(&layout, public_key)? {
                guard::Outcome::Intact | guard::Outcome::Idle => {
                    println!("intact: the active release matches its signed manifest");
                    0
                }
                guard::Outcome::Healed(n) => {
                    println!("healed: {n} entries restored (evidence in state/quarantine/)");
                    1
                }
                guard::Outcome::RolledBack(message) => {
                    println!("{message}");
                    EXIT_ROLLED_BACK
                }
                guard::Outcome::Busy => {
                    eprintln!("bulletproofctl: an update holds the root; try again");
                    EXIT_ERROR
                }
                guard::Outcome::Failed(message) => {
                    eprintln!("bulletproofctl: {message}");
                    EXIT_ERROR
                }
                guard::Outcome::Drift(message) => {
                    println!("drift: {message}");
                    1
                }
            })
        }
        Command::Render { root, vars } => {
            let layout = layout::Layout::new(&root.root);
            let mut pairs = Vec::new();
            for var in vars {
                let (key, value) = var
                    .split_once('=')
                    .with_context(|| format!("--var {var}: expected KEY=VALUE"))?;
                pairs.push((key.to_owned(), value.to_owned()));
            }
            let results = conf::render(&layout, &pairs)?;
            for (path, changed) in &results {
                println!(
                    "{} {}",
                    if *changed { "rendered" } else { "unchanged" },
                    path.display()
                );
            }
            if results.is_empty() {
                println!("no templates (core/conf/**/*.j2) in the active release");
            }
            Ok(0)
        }
        Command::Flags { command, root } => {
            let layout = layout::Layout::new(&root.root);
            match command {
                FlagsCommand::List => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&conf::load_flags(&layout)?)?
                    );
                    Ok(0)
                }
                FlagsCommand::Get { name } => match conf::load_flags(&layout)?.get(&name) {
                    Some(value) => {
                        println!("{value}");
                        Ok(0)
                    }
                    None => {
                        eprintln!("bulletproofctl: flag {name} is not set");
                        Ok(EXIT_VERIFY)
                    }
                },
                FlagsCommand::Set { name, value } => {
                    let changed = conf::set_flag(&layout, &name, Some(conf::parse_value(&value)))?;
                    println!("{name} {}", if changed { "set" } else { "unchanged" });
                    Ok(0)
                }
                FlagsCommand::Unset { name } => {
                    let changed = conf::set_flag(&layout, &name, None)?;
                    println!("{name} {}", if changed { "unset" } else { "was not set" });
                    Ok(0)
                }
            }
        }
        Command::Log {
            command:
                LogCommand::Verify {
                    files,
                    root,
                    initial_key,
                    host_key,
                    max_age,
                    no_checkpoint,
                },
        } => {
            let layout = layout::Layout::new(&root);
            let initial_key = initial_key.unwrap_or_else(|| seclog::master_key_path(&layout));
            // The initial log key is a secret file like any other: whoever can write it
            // can make a forged chain verify. Checked (and warned about) here; once the
            // file and every directory and symlink on the way are root's or ours, the
            // path can change under us only by our own hand, so read_master's read of
            // the same path reads the file checked.
            if let Some(warning) =
                integrity_common::read_secret(&initial_key, "initial log key")?.warning()
            {
                warn_secret(warning);
            }
            let master = seclog::read_master(&initial_key)?;
            let host_key = match host_key {
                Some(path) => Ok(integrity_trust::load_public_key(&path)?),
                None => integrity_trust::load_public_key(&layout.host_public_key())
                    .map_err(|e| e.to_string()),
            };
            let verdict = seclog::verify(
                &files,
                &seclog::VerifyOptions {
                    master,
                    host_key,
                    max_age_secs: max_age,
                    require_checkpoint: !no_checkpoint,
                },
            )?;
            for note in &verdict.notes {
                eprintln!("note: {note}");
            }
            match verdict.problem {
                None => {
                    println!(
                        "intact: {} records of {}, seq {}..{}, last at {}",
                        verdict.records,
                        verdict.component.as_deref().unwrap_or("?"),
                        verdict.first_seq.unwrap_or(0),
                        verdict.last_seq.unwrap_or(0),
                        verdict.last_ts.as_deref().unwrap_or("-")
                    );
                    Ok(0)
                }
                Some((file, line, what)) => {
                    println!("{}:{line}: {what}", file.display());
                    Ok(EXIT_VERIFY)
                }
            }
        }
        Command::Log {
            command: LogCommand::Reinit { root, log_key_out },
        } => {
            let layout = layout::Layout::new(&root);
            let done = seclog::reinit(&layout, log_key_out.as_deref())?;
            println!(
                "security log re-initialised: epoch {} ({})",
                done.epoch,
                done.reason
                    .as_deref()
                    .unwrap_or("on request; the key state was usable")
            );
            for file in &done.closed {
                println!("closed: {}", file.display());
            }
            if let Some(id) = &done.new_host_key {
                println!(
                    "new host key {id} signs checkpoints ({})",
                    layout.host_public_key().display()
                );
            }
            println!(
                "the new initial log key is in {}: copy it off this host and delete it here (log verify --initial-key needs it)",
                done.master.display()
            );
            Ok(0)
        }
        Command::Snapshot {
            root,
            secret_key,
            password_file,
        } => snapshot::snapshot(
            &layout::Layout::new(&root.root),
            secret_key,
            password_of(password_file.as_deref()),
        ),
    }
}

/// `--password-file F`, or a prompt on the terminal (refused without one). The file is
/// read by `integrity_trust` through `integrity_common::read_secret` (refused when
/// others can write it; a warning through [`warn_secret`], or on stderr for
/// `snapshot`, when they can read it).
fn password_of(file: Option<&Path>) -> Password<'_> {
    match file {
        Some(path) => Password::File(path),
        None => Password::PromptIfTerminal,
    }
}

/// A secret file (secret key, password file, initial log key) that others can read:
/// one line on stderr naming the file and its mode, never its content.
fn warn_secret(warning: &integrity_trust::SecretWarning) {
    eprintln!("bulletproofctl: warning: {warning}");
}

fn release_result(result: Result<release::Report, release::Failure>) -> anyhow::Result<u8> {
    match result {
        Ok(report) => {
            println!("{}", report.message);
            Ok(0)
        }
        Err(release::Failure::Refused(message)) => {
            eprintln!("bulletproofctl: refused: {message}");
            Ok(EXIT_VERIFY)
        }
        Err(release::Failure::RolledBack(message)) => {
            eprintln!("bulletproofctl: {message}");
            Ok(EXIT_ROLLED_BACK)
        }
        Err(release::Failure::Error(error)) => Err(error),
    }
}

fn parse_owner(text: &str) -> anyhow::Result<(u32, u32)> {
    let (uid, gid) = text.split_once(':').context("--owner must be UID:GID")?;
    Ok((
        uid.parse().context("--owner: bad uid")?,
        gid.parse().context("--owner: bad gid")?,
    ))
}
