//! Appending a record: the MAC chained to the previous one, the key evolved one way,
//! the head signed as a checkpoint with the host key.

use super::*;

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
        let state_file = self.state_path(component);
        let mut state = self.load_state(component)?;
        let mut key = unhex(&state.key).context("log key state is corrupt")?;
        let log = self.jsonl_path(component);

        // A record written whose state update did not land (a crash in between): the log's
        // last line carries `next_seq` and verifies with the current key; move past it.
        if let Some(last) = last_line(&log)? {
            if let Ok(record) = parse_line(&last) {
                if record.seq == state.next_seq
                    && mac_of(&key, record.body.as_bytes()) == record.mac
                {
                    key = evolve(&key);
                    state = KeyState {
                        next_seq: record.seq + 1,
                        key: hex(&key),
                        prev: record.mac,
                    };
                }
            }
        }

        let ts = integrity_common::manifest::now_timestamp();
        let body = format!(
            "{{\"seq\":{},\"ts\":{},\"component\":{},\"event\":{},\"msg\":{},\"data\":{},\"prev\":\"{}\"",
            state.next_seq,
            serde_json::to_string(&ts)?,
            serde_json::to_string(component)?,
            serde_json::to_string(event)?,
            serde_json::to_string(msg)?,
            serde_json::to_string(&data)?,
            state.prev
        );
        if body.len() + 80 > MAX_LINE_BYTES {
            bail!("security record too large");
        }
        let mac = mac_of(&key, body.as_bytes());
        let line = format!("{body}{MAC_MARK}{mac}\"}}\n");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        crash_point("log-appended");
        let seq = state.next_seq;
        let next = KeyState {
            next_seq: seq + 1,
            key: hex(&evolve(&key)),
            prev: mac.clone(),
        };
        key.fill(0);
        write_file(&state_file, &serde_json::to_vec(&next)?, 0o600)?;

        let human = self.human_log_path(component);
        if let Ok(mut file) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&human)
        {
            let _ = writeln!(file, "[{ts}] {event}: {}", msg.replace('\n', " "));
        }
        self.checkpoint(&log, seq, &mac, &ts).with_context(|| {
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
