//! `log verify`: a chain walked from its initial key, every kind of tampering named,
//! checkpoints checked with the host key (and never "intact" when they cannot be).

use super::*;

/// One parsed record line.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    pub mac: String,
    pub component: String,
    pub event: String,
    /// The MACed bytes: the line up to `,"mac":`.
    pub(crate) body: String,
}

/// Parses a record line strictly: JSON object, MAC last.
pub fn parse_line(line: &str) -> Result<Record, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err("line too long".into());
    }
    let at = line.rfind(MAC_MARK).ok_or("no mac")?;
    let (body, rest) = line.split_at(at);
    let mac = rest
        .strip_prefix(MAC_MARK)
        .and_then(|r| r.strip_suffix("\"}"))
        .ok_or("malformed mac")?;
    if unhex(mac).is_none() || mac.len() != 64 {
        return Err("malformed mac".into());
    }
    #[derive(serde::Deserialize)]
    struct Fields {
        seq: u64,
        ts: String,
        component: String,
        event: String,
        prev: String,
        mac: String,
    }
    let fields: Fields = serde_json::from_str(line).map_err(|e| format!("not a record: {e}"))?;
    if fields.mac != mac {
        return Err("malformed mac".into());
    }
    Ok(Record {
        seq: fields.seq,
        ts: fields.ts,
        prev: fields.prev,
        mac: mac.to_owned(),
        component: fields.component,
        event: fields.event,
        body: body.to_owned(),
    })
}

/// What `log verify` found.
#[derive(Debug)]
pub struct Verdict {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_ts: Option<String>,
    pub component: Option<String>,
    /// `(file, line number, what is wrong)` of the first problem.
    pub problem: Option<(PathBuf, usize, String)>,
    pub notes: Vec<String>,
}

pub struct VerifyOptions {
    pub master: [u8; 32],
    /// The host public key that signs checkpoints, or why there is none: a checkpoint
    /// is then not checked, and the log is not called intact.
    pub host_key: Result<integrity_trust::PublicKey, String>,
    pub max_age_secs: Option<u64>,
    pub require_checkpoint: bool,
}

/// Verifies one chain spread over `files` (oldest first, e.g. `log.1 log`).
pub fn verify(files: &[PathBuf], options: &VerifyOptions) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict {
        records: 0,
        first_seq: None,
        last_seq: None,
        last_ts: None,
        component: None,
        problem: None,
        notes: Vec::new(),
    };
    let last_file = files.last().cloned().unwrap_or_default();
    // The signed checkpoint (chain head) beside the newest file; it also names the
    // component whose chain this is.
    let checkpoint = read_checkpoint(&checkpoint_path(&last_file), options.host_key.as_ref());
    if let Ok(Some(point)) = &checkpoint {
        verdict.component = point.component.clone();
    }
    // Every record's position and seq, read loosely first: a gap whose records appear
    // further on is a reordering, not a deletion.
    let mut positions: Vec<(usize, usize, u64)> = Vec::new();
    // Each file's component, if all its readable records are of one.
    let mut components: Vec<FileComponent> = Vec::new();
    for (file_index, file) in files.iter().enumerate() {
        let reader = std::io::BufReader::new(
            fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        );
        let mut of = FileComponent::Empty;
        for (index, line) in reader.split(b'\n').enumerate() {
            if let Some(record) = line
                .ok()
                .and_then(|l| String::from_utf8(l).ok())
                .and_then(|l| parse_line(&l).ok())
            {
                positions.push((file_index, index + 1, record.seq));
                of = match of {
                    FileComponent::Empty => FileComponent::One(record.component),
                    FileComponent::One(c) if c == record.component => FileComponent::One(c),
                    _ => FileComponent::Mixed,
                };
            }
        }
        components.push(of);
    }
    // Files each wholly of one component, but not all of the same one: the logs of
    // different components were given as one rotated chain. Said as such, not as the
    // "inserted" record the first foreign line would otherwise be called.
    let mut whole = files
        .iter()
        .zip(&components)
        .filter_map(|(file, of)| match of {
            FileComponent::One(c) => Some((file, c)),
            _ => None,
        });
    if let Some((first_file, first)) = whole.next() {
        if let Some((file, other)) = whole.find(|(_, c)| c != &first) {
            let name = |f: &Path| {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.display().to_string())
            };
            verdict.problem = Some((
                file.clone(),
                0,
                format!(
                    "{} is the log of component {other}, {} of {first}: \
                     give the files of one component, oldest first",
                    name(file),
                    name(first_file)
                ),
            ));
            return Ok(verdict);
        }
    }
    // Key for the next expected seq, and that seq.
    let mut key: Option<([u8; 32], u64)> = None;
    let mut prev_mac: Option<String> = None;
    let mut prev_line = String::new();
    'files: for (file_index, file) in files.iter().enumerate() {
        let reader = std::io::BufReader::new(
            fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        );
        for (index, line) in reader.split(b'\n').enumerate() {
            let line_no = index + 1;
            let line = line?;
            let fail = |why: String| Some((file.clone(), line_no, why));
            let Ok(line) = String::from_utf8(line) else {
                verdict.problem = fail("not UTF-8: edited".into());
                break 'files;
            };
            if line.is_empty() {
                verdict.problem = fail("empty line: edited".into());
                break 'files;
            }
            let record = match parse_line(&line) {
                Ok(record) => record,
                Err(why) => {
                    verdict.problem =
                        fail(format!("malformed record ({why}): edited or truncated"));
                    break 'files;
                }
            };
            let component = verdict
                .component
                .get_or_insert_with(|| record.component.clone())
                .clone();
            if record.component != component {
                verdict.problem = fail(format!(
                    "record of component {} in {component}'s chain: inserted",
                    record.component
                ));
                break 'files;
            }
            let (mut k, mut at) = match key {
                Some(state) => state,
                None => (initial_key(&options.master, &component), 0),
            };
            if let Some(last) = verdict.last_seq {
                if record.seq <= last {
                    let why = if record.seq == last && line == prev_line {
                        format!("seq {} appears twice: duplicated", record.seq)
                    } else if record.seq == last {
                        format!("a second record with seq {}: inserted", record.seq)
                    } else {
                        format!("seq {} after seq {last}: reordered", record.seq)
                    };
                    verdict.problem = fail(why);
                    break 'files;
                }
                if record.seq > last + 1 {
                    let gap = (last + 1)..record.seq;
                    let reordered = positions
                        .iter()
                        .filter(|(f, l, _)| (*f, *l) > (file_index, line_no))
                        .any(|(_, _, seq)| gap.contains(seq));
                    if reordered {
                        verdict.problem = fail(format!(
                            "seq {} comes before seq {}..{}: reordered",
                            record.seq,
                            last + 1,
                            record.seq - 1
                        ));
                        break 'files;
                    }
                    verdict.problem = fail(format!(
                        "seq {} follows seq {last}: records {}..{} are missing (deleted)",
                        record.seq,
                        last + 1,
                        record.seq - 1
                    ));
                    break 'files;
                }
            }
            if record.seq < at {
                verdict.problem =
                    fail(format!("seq {} is behind the chain: reordered", record.seq));
                break 'files;
            }
            if record.seq - at > 100_000_000 {
                verdict.problem = fail("implausible sequence number: edited".into());
                break 'files;
            }
            while at < record.seq {
                k = evolve(&k);
                at += 1;
            }
            if mac_of(&k, record.body.as_bytes()) != record.mac {
                verdict.problem = fail(format!(
                    "seq {}: the MAC does not verify under its key (edited, or forged without the key of that time)",
                    record.seq
                ));
                break 'files;
            }
            match &prev_mac {
                Some(prev) if *prev != record.prev => {
                    verdict.problem = fail(format!(
                        "seq {}: does not chain to the record before it (inserted or reordered)",
                        record.seq
                    ));
                    break 'files;
                }
                None if record.seq == 0 && record.prev != ZERO_MAC => {
                    verdict.problem = fail("seq 0 does not start a chain: edited".into());
                    break 'files;
                }
                _ => {}
            }
            if verdict.first_seq.is_none() {
                verdict.first_seq = Some(record.seq);
                if record.seq > 0 {
                    verdict.notes.push(format!(
                        "starts at seq {} (the records before it are in a rotated file; give it first to check continuity)",
                        record.seq
                    ));
                }
            }
            if let Ok(Some(point)) = &checkpoint {
                if point.seq == record.seq && point.mac != record.mac {
                    verdict.problem = fail(format!(
                        "seq {} differs from the signed checkpoint: edited (rewritten after the checkpoint was signed)",
                        record.seq
                    ));
                    break 'files;
                }
            }
            verdict.records += 1;
            verdict.last_seq = Some(record.seq);
            prev_line = line.clone();
            verdict.last_ts = Some(record.ts.clone());
            prev_mac = Some(record.mac.clone());
            key = Some((evolve(&k), record.seq + 1));
        }
    }
    if verdict.problem.is_some() {
        return Ok(verdict);
    }
    let lines_in_last = count_lines(&last_file);
    // The checkpoint: the signed head must be in the chain.
    match checkpoint {
        Ok(Some(point)) => {
            let seq = point.seq;
            match verdict.last_seq {
                None => {
                    verdict.problem = Some((last_file.clone(), 0, format!(
                        "no records, but the signed checkpoint names seq {seq}: emptied (or rotated with nothing written since)"
                    )));
                }
                Some(last) if last < seq => {
                    verdict.problem = Some((last_file.clone(), lines_in_last + 1, format!(
                        "the log ends at seq {last} but the signed checkpoint names seq {seq}: truncated tail"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(None) if options.require_checkpoint && verdict.records > 0 => {
            verdict.problem = Some((
                last_file.clone(),
                0,
                "the signed checkpoint is missing (deleted?); the tail cannot be vouched for"
                    .into(),
            ));
        }
        Ok(None) => {}
        Err(why) => {
            verdict.problem = Some((last_file.clone(), 0, format!("checkpoint: {why}")));
        }
    }
    if verdict.records == 0 && verdict.problem.is_none() {
        verdict.problem = Some((last_file.clone(), 0, "no records: emptied".into()));
    }
    if let (None, Some(max_age), Some(ts)) =
        (&verdict.problem, options.max_age_secs, &verdict.last_ts)
    {
        let age = humantime::parse_rfc3339(ts)
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if age > max_age {
            verdict.problem = Some((last_file, lines_in_last + 1, format!(
                "the last record is {age} s old (more than {max_age} s): the tail was cut off or its writer stopped"
            )));
        }
    }
    Ok(verdict)
}

/// The component of one file's records.
enum FileComponent {
    /// No readable record.
    Empty,
    /// All readable records are of this component.
    One(String),
    /// Records of more than one component.
    Mixed,
}

pub(crate) fn count_lines(path: &Path) -> usize {
    fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).split(b'\n').count())
        .unwrap_or(0)
}

/// A signed chain head.
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    pub(crate) mac: String,
    /// The chain's component, from the checkpoint's `file:<component>.jsonl`.
    pub(crate) component: Option<String>,
}

/// `Ok(None)`: no checkpoint file. A checkpoint whose signature cannot be checked (no
/// host key) is an error, never taken on trust.
pub(crate) fn read_checkpoint(
    path: &Path,
    host_key: Result<&integrity_trust::PublicKey, &String>,
) -> Result<Option<Checkpoint>, String> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let key = host_key.map_err(|why| {
        format!(
            "{}: its signature cannot be checked, no host public key ({why}; give --host-key): not vouched for",
            path.display()
        )
    })?;
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let signature = fs::read_to_string(&sig_path)
        .map_err(|e| format!("{}: signature missing: {e}", path.display()))?;
    integrity_trust::verify(key, &text, &signature, false)
        .map_err(|e| format!("{}: signature: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| "not text".to_string())?;
    let mut seq = None;
    let mut mac = None;
    let mut component = None;
    for token in text.trim_end().split('\t') {
        if let Some(value) = token.strip_prefix("seq:") {
            seq = value.parse().ok();
        } else if let Some(value) = token.strip_prefix("mac:") {
            mac = Some(value.to_owned());
        } else if let Some(value) = token.strip_prefix("file:") {
            component = value.strip_suffix(".jsonl").map(str::to_owned);
        }
    }
    match (seq, mac) {
        (Some(seq), Some(mac)) => Ok(Some(Checkpoint {
            seq,
            mac,
            component,
        })),
        _ => Err("malformed".into()),
    }
}
