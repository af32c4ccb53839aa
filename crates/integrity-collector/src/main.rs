//! `integrity-collector`: scan a golden image into a baseline manifest.
//!
//! Glue only: parse flags, run the engine's scanner, write the manifest atomically,
//! report per-path errors and a one-line summary on stderr.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use integrity_common::manifest::now_timestamp;
use integrity_common::scan::describe_io_error;
use integrity_common::{
    pathenc, scan, validate_image_id, Baseline, Exclusions, Policy, ScanOptions, ScanProgress,
};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Written, and every path recorded.
const EXIT_OK: u8 = 0;
/// Written, but some paths could not be recorded (listed in the manifest and on stderr).
const EXIT_PARTIAL: u8 = 1;
/// Nothing written (or not uploaded): bad arguments, unusable root or output, upload
/// refused or service unreachable.
const EXIT_FAILED: u8 = 2;

const AFTER_HELP: &str = "\
Exit status:
  0  manifest written, every path recorded
  1  manifest written, but some paths could not be read (listed under \"errors\"
     in the manifest and on stderr)
  2  nothing written, or not uploaded: bad arguments, unusable root or output,
     upload refused (401/403 token, 409 another baseline has this image id,
     413 too large, 400 invalid) or the service unreachable after retries
     (connection errors and 5xx are retried with backoff; 4xx never are)

Default exclusions (whole path components, relative to --root):
  /proc /sys /dev /run /tmp /var/tmp /var/log

Policy: the baseline carries per-path rules (what is checked where) that every agent
applies; without --policy it is the built-in one for cloud VMs (per-boot and
per-instance files, caches, daemon state, append-only logs; see
--print-default-policy). Rules come first, the exclusions after them, so a rule can
reach a single file inside an excluded tree.

Environment:
  IMAGE_ID           image id when --image-id is not given
  BULLETPROOF_TOKEN  bearer token when --token is not given
  SOURCE_DATE_EPOCH  if set, the manifest's timestamp (reproducible builds)";

/// Scan a golden image and write its baseline manifest (JSON).
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// Root of the tree to scan; entries are recorded relative to it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,

    /// Image id the baseline describes (letters, digits and ._-+:@~, at most 128).
    #[arg(long, value_name = "ID", env = "IMAGE_ID", required = true)]
    image_id: Option<String>,

    /// Write the manifest to FILE (atomically) instead of stdout; `-` is stdout.
    #[arg(long, short, value_name = "FILE|-")]
    output: Option<PathBuf>,

    /// Upload the manifest to the metadata service at URL (POST /baselines); the
    /// manifest goes to stdout only if --output - is also given. Repeatable: replicas
    /// of one service, tried in order, the next on a connection error, timeout or 5xx.
    #[arg(long, value_name = "URL")]
    server: Vec<String>,

    /// Bearer token for --server.
    #[arg(
        long,
        value_name = "T",
        env = "BULLETPROOF_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Read the bearer token from FILE (keeps it out of `ps`). Refused when group or
    /// others can write it (or its directory), or another user owns it; a warning when
    /// they can read it.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,

    /// Trust this PEM CA certificate for an https --server (instead of the public
    /// web roots).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Attempts to upload before giving up (connection errors and 5xx are retried).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    upload_attempts: u32,

    /// Sign the exact bytes written or uploaded with this minisign secret key: writes
    /// FILE.minisig beside --output FILE, and uploads the signature with --server. The
    /// trusted comment names the image id and the timestamp.
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,

    /// Password of an encrypted --sign-key (its first line); without it the password
    /// is asked on the terminal, and refused when there is none. Like --token-file
    /// (and the key itself), refused when others can write it.
    #[arg(long, value_name = "F", requires = "sign_key")]
    password_file: Option<PathBuf>,

    /// Also exclude PATH (relative to --root) and everything below it. Repeatable.
    #[arg(long, value_name = "PATH")]
    exclude: Vec<PathBuf>,

    /// Do not apply the default exclusions.
    #[arg(long)]
    no_default_excludes: bool,

    /// Embed the per-path rules of this TOML policy in the baseline (paths it ignores
    /// are not scanned). Default: the built-in policy for cloud VMs.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Embed no policy: every agent checks every scanned path fully.
    #[arg(long, conflicts_with = "policy")]
    no_policy: bool,

    /// Print the built-in policy for cloud VMs (TOML, with why each rule is there) and
    /// exit.
    #[arg(long, exclusive = true)]
    print_default_policy: bool,

    /// Descend into other filesystems mounted below the root.
    #[arg(long)]
    cross_filesystems: bool,

    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// No progress bar and no summary line (errors are still printed).
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    cli_dist::maybe_generate(<Args as clap::CommandFactory>::command);
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("integrity-collector: error: {err:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(args: &Args) -> Result<u8> {
    if args.print_default_policy {
        io::stdout()
            .write_all(integrity_common::policy::CLOUD_DEFAULT_TOML.as_bytes())
            .context("cannot write to stdout")?;
        return Ok(EXIT_OK);
    }
    let image_id = args.image_id.clone().unwrap_or_default();
    validate_image_id(&image_id).map_err(|reason| anyhow::anyhow!("--image-id: {reason}"))?;
    let policy = if args.no_policy {
        None
    } else {
        Some(match &args.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --policy {}", path.display()))?;
                Policy::from_toml_str(&text)
                    .map_err(|error| anyhow::anyhow!("--policy {}: {error}", path.display()))?
            }
            None => Policy::cloud_default(),
        })
    };
    let timestamp = timestamp()?;
    let exclusions = Exclusions::from_flags(
        !args.no_default_excludes,
        args.exclude.iter().map(PathBuf::as_path),
    )
    .map_err(|reason| anyhow::anyhow!(reason))?;
    // stdout when asked (`-`), or when the manifest goes nowhere else.
    let to_stdout = match &args.output {
        Some(path) => path == Path::new("-"),
        None => args.server.is_empty(),
    };
    let output = args
        .output
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    if let Some(path) = output {
        probe_writable(path)?;
    }
    // Before a long scan: a bad key, URL, CA file or token file fails now.
    let signer = match &args.sign_key {
        Some(key) => {
            if output.is_none() && args.server.is_empty() {
                bail!("--sign-key needs --output FILE (for FILE.minisig) or --server");
            }
            let password = match &args.password_file {
                Some(path) => integrity_trust::Password::File(path),
                None => integrity_trust::Password::PromptIfTerminal,
            };
            Some(
                integrity_trust::load_secret_key_with(key, password, &mut warn_secret)
                    .map_err(|error| anyhow::anyhow!("--sign-key: {error}"))?,
            )
        }
        None => None,
    };
    let client = match args.server.split_first() {
        Some((server, more)) => Some(upload_client(args, server, more)?),
        None => None,
    };

    let options = ScanOptions {
        root: args.root.clone(),
        exclusions,
        cross_filesystems: args.cross_filesystems,
        policy: policy.clone().map(std::sync::Arc::new),
    };
    let progress = ScanProgress::default();
    let started = Instant::now();
    let scanned = with_progress_bar(&progress, !args.quiet, || {
        let mut pool = rayon::ThreadPoolBuilder::new();
        if let Some(threads) = args.threads {
            pool = pool.num_threads(threads);
        }
        let pool = pool.build().context("cannot start worker threads")?;
        Ok(pool.install(|| scan(&options, &progress))?)
    })?;
    let elapsed = started.elapsed();

    for record in &scanned.errors {
        eprintln!(
            "integrity-collector: {}: {}",
            quoted(&pathenc::encode(&record.path)),
            record.error
        );
    }
    let baseline = Baseline {
        image_id,
        timestamp,
        entries: scanned.entries,
        errors: scanned.errors,
        policy,
    };
    baseline
        .validate()
        .context("internal error: the scan produced an invalid manifest")?;
    // One serialization: the file, stdout and the upload carry the same bytes (the
    // bytes a signature will cover).
    let bytes = baseline.to_json_bytes();
    let signature = match &signer {
        Some(sk) => {
            let comment = format!(
                "image_id:{}\ttimestamp:{}",
                baseline.image_id, baseline.timestamp
            );
            Some(
                integrity_trust::sign(sk, &bytes, &comment)
                    .map_err(|error| anyhow::anyhow!("{error}"))?,
            )
        }
        None => None,
    };
    if let Some(path) = output {
        write_atomically(path, &bytes)?;
        if let Some(signature) = &signature {
            write_atomically(&integrity_trust::signature_path(path), signature.as_bytes())?;
        }
    }
    if to_stdout {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .map_err(|err| {
                anyhow::anyhow!(
                    "cannot write the manifest to stdout: {}",
                    describe_io_error(&err)
                )
            })?;
    }
    if let Some(client) = &client {
        let servers = args.server.join(", ");
        let mut on_retry = |attempt: u32, why: &str, delay: Duration| {
            eprintln!(
                "integrity-collector: upload attempt {attempt} failed ({why}); retrying in {:.1} s",
                delay.as_secs_f64()
            );
        };
        let uploaded = client
            .upload_baseline(
                &baseline.image_id,
                &bytes,
                signature
                    .as_deref()
                    .map(integrity_trust::to_header)
                    .as_deref(),
                &mut on_retry,
            )
            .map_err(|error| {
                let written = match output {
                    Some(path) => format!(" (the manifest was written to {})", path.display()),
                    None => String::new(),
                };
                anyhow::anyhow!("upload to {servers} failed: {error}{written}")
            })?;
        if let Some(signature) = &signature {
            upload_signature(
                client,
                &baseline.image_id,
                &bytes,
                signature,
                signer.as_ref(),
                &mut on_retry,
            )
            .map_err(|error| anyhow::anyhow!("signature upload to {servers} failed: {error}"))?;
        }
        if !args.quiet {
            let how = match uploaded {
                integrity_client::Uploaded::Created => "stored",
                integrity_client::Uploaded::AlreadyStored => "already stored (identical bytes)",
            };
            let server = client.answered_by().unwrap_or(servers);
            eprintln!(
                "integrity-collector: baseline {} {how} at {server}/baselines/{}",
                baseline.image_id, baseline.image_id
            );
        }
    }
    if !args.quiet {
        let secs = elapsed.as_secs_f64();
        eprintln!(
            "integrity-collector: {} entries, {} bytes hashed, {} errors, {:.2} s ({:.0} MB/s)",
            baseline.entries.len(),
            scanned.bytes_hashed,
            baseline.errors.len(),
            secs,
            scanned.bytes_hashed as f64 / 1e6 / secs.max(1e-9),
        );
    }
    Ok(if baseline.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_PARTIAL
    })
}

/// `PUT /baselines/{id}/signature`. A `409` (another signature already stored, e.g. by
/// an earlier attempt whose answer was lost: minisign signatures differ each time) is
/// accepted only if the stored signature verifies over these bytes with our key.
fn upload_signature(
    client: &integrity_client::Client,
    image_id: &str,
    bytes: &[u8],
    signature: &str,
    signer: Option<&integrity_trust::SecretKey>,
    on_retry: &mut dyn FnMut(u32, &str, Duration),
) -> Result<()> {
    match client
        .put_signature(image_id, signature.as_bytes(), on_retry)
        .map_err(|error| anyhow::anyhow!("{error}"))?
    {
        integrity_client::SignatureStored::Created
        | integrity_client::SignatureStored::Unchanged => Ok(()),
        integrity_client::SignatureStored::Conflict => {
            let stored = client
                .fetch_signature(image_id, on_retry)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let pk = signer
                .map(integrity_trust::public_key_of)
                .transpose()
                .map_err(|error| anyhow::anyhow!("{error}"))?
                .context("no signing key")?;
            let stored = String::from_utf8_lossy(&stored);
            integrity_trust::verify(&pk, bytes, &stored, false).map_err(|error| {
                anyhow::anyhow!(
                    "another signature is stored for {image_id} and it is not ours: {error}"
                )
            })?;
            Ok(())
        }
    }
}

/// The upload client of `--server`, with the token from `--token`, `BULLETPROOF_TOKEN`
/// or `--token-file`.
fn upload_client(args: &Args, server: &str, more: &[String]) -> Result<integrity_client::Client> {
    let token = match &args.token_file {
        Some(path) => {
            // Refused when someone else could have written it (their token would be
            // sent as ours), warned about when others can read it.
            let secret = integrity_common::read_secret(path, "--token-file")?;
            if let Some(warning) = secret.warning() {
                warn_secret(warning);
            }
            Some(secret.trimmed()?.to_owned())
        }
        None => args.token.clone().filter(|token| !token.is_empty()),
    };
    let mut config = integrity_client::ClientConfig::new(
        server,
        concat!("integrity-collector/", env!("CARGO_PKG_VERSION")),
    );
    config.fallback_servers = more.to_vec();
    config.token = token;
    config.ca_cert = args.ca_cert.clone();
    config.retry.attempts = args.upload_attempts;
    let client =
        integrity_client::Client::new(&config).map_err(|error| anyhow::anyhow!("{error}"))?;
    if client.token_in_clear_text() {
        eprintln!(
            "integrity-collector: warning: sending the token over plain http to {}; \
             use https",
            args.server.join(", ")
        );
    }
    Ok(client)
}

/// A secret file (--token-file, --sign-key, --password-file) that others can read: one
/// line on stderr naming the file and its mode (never its content).
fn warn_secret(warning: &integrity_common::SecretWarning) {
    eprintln!("integrity-collector: warning: {warning}");
}

/// The manifest's timestamp: now, or `SOURCE_DATE_EPOCH` for reproducible builds.
fn timestamp() -> Result<String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => {
            let secs: u64 = text.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH {text:?} is not a number of seconds")
            })?;
            let time = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            Ok(humantime::format_rfc3339_seconds(time).to_string())
        }
        Err(_) => Ok(now_timestamp()),
    }
}

/// A path as a JSON string: quoted, control characters escaped (a file name cannot
/// forge a line of our output).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

fn output_error(path: &Path, err: &io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot write --output {}: {}",
        path.display(),
        describe_io_error(err)
    )
}

fn temp_in_dir_of(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("--output {}: not a file name", path.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|err| output_error(path, &err))
}

/// Fails before a long scan if the output cannot be written (the probe is removed).
fn probe_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("cannot write --output {}: is a directory", path.display());
    }
    temp_in_dir_of(path).map(drop)
}

/// Writes to a temporary file beside `path`, syncs it and renames it over `path`, so a
/// reader sees either the old file or the complete new one, never a partial one. On
/// failure the temporary file is removed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    integrity_common::handles::write_atomic(path, bytes, 0o644)
        .map_err(|err| output_error(path, &err))
}

/// Runs `work` with a progress bar on stderr when stderr is a terminal.
fn with_progress_bar<T>(
    progress: &ScanProgress,
    wanted: bool,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T>
where
    T: Send,
{
    if !wanted || !io::stderr().is_terminal() {
        return work();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|threads| {
        threads.spawn(|| {
            // At least one frame, however short the scan (the loop tests at its end).
            loop {
                let finished = done.load(Ordering::Relaxed);
                let entries = progress.entries.load(Ordering::Relaxed);
                let bytes = progress.bytes.load(Ordering::Relaxed);
                let errors = progress.errors.load(Ordering::Relaxed);
                let rate = bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{entries} entries, {:.1} MB, {rate:.0} MB/s, {errors} errors",
                    bytes as f64 / 1e6
                ));
                bar.tick();
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    })
}
