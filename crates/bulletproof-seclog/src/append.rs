//! Appending a record: the MAC chained to the previous one, the key evolved one way,
//! the head signed as a checkpoint with the host key.

use super::*;

/// Most records [`SecLog::append_many`] writes at once (the recovery after a crash
/// between a batch and its key state update looks this far ahead).
pub const MAX_BATCH: usize = 4096;

/// The key of `record` when it was written with the keys following `key` (the key of
/// seq `state.next_seq`) but the key state was not updated: a crash between the two
/// writes. Only as far ahead as the state's announced batch.
pub(crate) fn key_of_written(
    key: &[u8; 32],
    state: &KeyState,
    record: &Record,
) -> Option<[u8; 32]> {
    let ahead = record.seq.checked_sub(state.next_seq)?;
    if ahead > state.pending.min(MAX_BATCH as u64) {
        return None;
    }
    let mut at = *key;
    for _ in 0..ahead {
        at = evolve(&at);
    }
    (mac_of(&at, record.body.as_bytes()) == record.mac).then_some(at)
}

pub(crate) fn checkpoint_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

impl SecLog {
    /// Appends one security record to `component`'s chain (and a human line), signs the
    /// new head as a checkpoint with the host key. Serialised by a lock on
    /// `install/logkeys/`. Fails when the key state is missing, untrusted or damaged, and
    /// when the checkpoint cannot be signed.
    pub fn append(
        &self,
        component: &str,
        event: &str,
        msg: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<u64> {
        let dir = self.check_dir()?;
        let _lock = lock_dir(&dir, true)?;
        self.append_locked(component, event, msg, data)
    }

    /// [`Self::append`] for a caller holding the lock of `install/logkeys/`.
    pub(crate) fn append_locked(
        &self,
        component: &str,
        event: &str,
        msg: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<u64> {
        self.append_many_locked(component, &[(event, msg, data)])
    }

    /// Appends several records to `component`'s chain at once: one write and one
    /// `fsync` of the log, one key state update and one checkpoint for all of them
    /// (a service auditing a burst of enrollments pays one disk flush, not one per
    /// record). Returns the seq of the last record; nothing is written for no records.
    pub fn append_many(
        &self,
        component: &str,
        records: &[(&str, &str, serde_json::Value)],
    ) -> anyhow::Result<Option<u64>> {
        if records.is_empty() {
            return Ok(None);
        }
        let dir = self.check_dir()?;
        let _lock = lock_dir(&dir, true)?;
        self.append_many_locked(component, records).map(Some)
    }

    fn append_many_locked(
        &self,
        component: &str,
        records: &[(&str, &str, serde_json::Value)],
    ) -> anyhow::Result<u64> {
        let state_file = self.state_path(component);
        let mut state = self.load_state(component)?;
        let mut key = unhex(&state.key).context("log key state is corrupt")?;
        let log = self.jsonl_path(component);

        // A record written whose state update did not land (a crash in between): the log's
        // last line carries `next_seq` and verifies with the current key; move past it.
        // After a batch, the last line is up to `MAX_BATCH - 1` records ahead.
        if let Some(last) = last_line(&log)? {
            if let Ok(record) = parse_line(&last) {
                if let Some(at) = key_of_written(&key, &state, &record) {
                    key = evolve(&at);
                    state = KeyState {
                        pending: 0,
                        next_seq: record.seq + 1,
                        key: hex(&key),
                        prev: record.mac,
                    };
                }
            }
        }
        if records.len() > MAX_BATCH {
            bail!("at most {MAX_BATCH} security records are appended at once");
        }

        if records.len() > 1 {
            // Announce the batch, so that a crash after its lines and before the state
            // update below is recognised as such (see `key_of_written`).
            let announced = KeyState {
                pending: records.len() as u64 - 1,
                ..state
            };
            write_file(&state_file, &serde_json::to_vec(&announced)?, 0o600)?;
            state = announced;
        }
        let ts = integrity_common::manifest::now_timestamp();
        let mut lines = String::new();
        let mut human = String::new();
        let mut seq = state.next_seq;
        let mut prev = state.prev.clone();
        for (index, (event, msg, data)) in records.iter().enumerate() {
            if index > 0 {
                key = evolve(&key);
                seq += 1;
            }
            let body = format!(
                "{{\"seq\":{},\"ts\":{},\"component\":{},\"event\":{},\"msg\":{},\"data\":{},\"prev\":\"{}\"",
                seq,
                serde_json::to_string(&ts)?,
                serde_json::to_string(component)?,
                serde_json::to_string(event)?,
                serde_json::to_string(msg)?,
                serde_json::to_string(data)?,
                prev
            );
            if body.len() + 80 > MAX_LINE_BYTES {
                bail!("security record too large");
            }
            let mac = mac_of(&key, body.as_bytes());
            lines.push_str(&format!("{body}{MAC_MARK}{mac}\"}}\n"));
            human.push_str(&format!("[{ts}] {event}: {}\n", msg.replace('\n', " ")));
            prev = mac;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        crash_point("log-appended");
        let next = KeyState {
            pending: 0,
            next_seq: seq + 1,
            key: hex(&evolve(&key)),
            prev: prev.clone(),
        };
        key.fill(0);
        write_file(&state_file, &serde_json::to_vec(&next)?, 0o600)?;

        let human_path = self.human_log_path(component);
        if let Ok(mut file) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&human_path)
        {
            let _ = file.write_all(human.as_bytes());
        }
        self.checkpoint(&log, seq, &prev, &ts).with_context(|| {
            format!("record {seq} of {component} was written, but its checkpoint was not signed")
        })?;
        Ok(seq)
    }

    /// Signs `seq:N<TAB>mac:HEX<TAB>ts:TS` with the host key and sends the same line to
    /// syslog (best effort).
    pub(crate) fn checkpoint(
        &self,
        log: &Path,
        seq: u64,
        mac: &str,
        ts: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "seq:{seq}\tmac:{mac}\tts:{ts}\tfile:{}\n",
            log.file_name().unwrap_or_default().to_string_lossy()
        );
        open_trusted(&self.host_key())?;
        let sk = integrity_trust::load_secret_key(
            &self.host_key(),
            integrity_trust::Password::PromptIfTerminal,
        )?;
        let signature = integrity_trust::sign(&sk, text.as_bytes(), &format!("checkpoint:{seq}"))?;
        let path = checkpoint_path(log);
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".minisig");
        // Signature first: a crash between the two leaves a checkpoint whose signature
        // does not verify, which the verifier reports, never a forged-looking one.
        write_file(Path::new(&sig_path), signature.as_bytes(), 0o644)?;
        write_file(&path, text.as_bytes(), 0o644)?;
        if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
            let message = format!(
                "<86>1 {ts} - bulletproof - checkpoint - {}",
                text.trim_end()
            );
            let _ = socket.send_to(message.as_bytes(), "/dev/log");
        }
        Ok(())
    }

    /// Logs a security event of `component`. On an installed root a record that cannot be
    /// appended is an error: said on stderr at once, and [`append_failed`] turns the
    /// command's exit status into a failure (the command ran [`Self::ensure_ready`] first, so
    /// this is a key state lost meanwhile, a full disk, …). A root not installed has no log.
    pub fn event_as(&self, component: &str, event: &str, msg: &str, data: serde_json::Value) {
        if !self.required() {
            return;
        }
        if let Err(error) = self.append(component, event, msg, data) {
            APPEND_FAILED.store(true, Ordering::SeqCst);
            eprintln!(
                "bulletproofctl: error: the security log did not record {event} ({component}): {error:#}; {}",
                self.reinit_hint()
            );
        }
    }

    /// A security event of `bulletproofctl` itself (install, update, rollback, …).
    pub fn event(&self, event: &str, msg: &str, data: serde_json::Value) {
        self.event_as("bulletproofctl", event, msg, data)
    }
}
