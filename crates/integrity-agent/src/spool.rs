//! The report spool (`STATE_DIR/spool/`, REFERENCE §7): every report is written here
//! before it is sent and removed only once the service acknowledged it, so a report
//! is always either spooled or acknowledged, whatever crashes when.
//!
//! One report is two files named by its sequence number, 20 digits so that names sort
//! as numbers: `00000000000000000042.minisig` (its signature), then
//! `00000000000000000042.json` (its exact bytes), each written atomically (temporary
//! file, fsync, rename, fsync of the directory). The `.json` file is what makes a
//! report spooled: it is written last and removed first. What a crash can leave
//! behind — a temporary file (a name starting with `.`), a signature without its
//! report — was never a spooled report and is removed when the spool is opened.
//!
//! The spool is bounded: beyond `--spool-max` reports the oldest are dropped, and how
//! many were dropped is kept in `spool/dropped` (`COUNT THROUGH`: the count not yet
//! reported, and the highest sequence number already counted, so a crash between
//! counting and removing never counts a report twice) until a report carries it.

use integrity_common::handles::{open_dir, write_atomic};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Digits of a spooled report's name.
const DIGITS: usize = 20;

/// Name of the drop count's file.
const DROPPED: &str = "dropped";

/// The spool directory of one state directory. The caller holds its lock.
pub struct Spool {
    dir: PathBuf,
}

/// One spooled report.
pub struct Spooled {
    pub bytes: Vec<u8>,
    /// The `.minisig` text; `None` when it is missing or unreadable (the report is then
    /// not sendable: tampered with, or a disk error).
    pub signature: Option<String>,
}

impl Spool {
    /// Opens `dir` (created 0700), removing what a crash may have left behind.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let spool = Spool {
            dir: dir.to_owned(),
        };
        let reports = spool.list()?;
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = seq_of(name, ".minisig").is_some_and(|seq| !reports.contains(&seq));
            let temporary = name.starts_with('.') && name.ends_with(".tmp");
            if orphan || temporary {
                fs::remove_file(dir.join(name))?;
            }
        }
        Ok(spool)
    }

    fn path(&self, seq: u64, extension: &str) -> PathBuf {
        self.dir.join(format!("{seq:0DIGITS$}{extension}"))
    }

    /// The sequence numbers of the spooled reports, oldest first.
    pub fn list(&self) -> io::Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(seq) = name.to_str().and_then(|name| seq_of(name, ".json")) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Spools a report: its signature, then its bytes (each atomically).
    pub fn put(&self, seq: u64, bytes: &[u8], signature: &str) -> io::Result<()> {
        write_atomic(&self.path(seq, ".minisig"), signature.as_bytes(), 0o600)?;
        write_atomic(&self.path(seq, ".json"), bytes, 0o600)
    }

    /// Reads a spooled report.
    pub fn read(&self, seq: u64) -> io::Result<Spooled> {
        let bytes = fs::read(self.path(seq, ".json"))?;
        let signature = fs::read_to_string(self.path(seq, ".minisig")).ok();
        Ok(Spooled { bytes, signature })
    }

    /// Removes a report: its bytes first, then its signature.
    pub fn remove(&self, seq: u64) -> io::Result<()> {
        match fs::remove_file(self.path(seq, ".json")) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let _ = fs::remove_file(self.path(seq, ".minisig"));
        rustix::fs::fsync(open_dir(&self.dir)?)?;
        Ok(())
    }

    /// `(count, through)` of `spool/dropped`; `(0, 0)` when absent or unreadable.
    fn drop_record(&self) -> (u64, u64) {
        let text = fs::read_to_string(self.dir.join(DROPPED)).unwrap_or_default();
        let mut numbers = text.split_whitespace().map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(count)), Some(Ok(through))) => (count, through),
            _ => (0, 0),
        }
    }

    fn write_drop_record(&self, count: u64, through: u64) -> io::Result<()> {
        write_atomic(
            &self.dir.join(DROPPED),
            format!("{count} {through}\n").as_bytes(),
            0o600,
        )
    }

    /// Reports dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.drop_record().0
    }

    /// A report carrying [`Spool::dropped`] is spooled: the count starts again at 0.
    pub fn clear_dropped(&self) -> io::Result<()> {
        match self.drop_record() {
            (0, _) => Ok(()),
            (_, through) => self.write_drop_record(0, through),
        }
    }

    /// Drops the oldest reports until fewer than `max` remain (room for one more).
    /// Each dropped report counts once, plus the drops it was carrying; the count is
    /// persisted before the files go. Returns how many were dropped now.
    pub fn make_room(&self, max: usize) -> io::Result<u64> {
        let seqs = self.list()?;
        let excess = (seqs.len() + 1).saturating_sub(max.max(1));
        if excess == 0 {
            return Ok(0);
        }
        let doomed = &seqs[..excess];
        let (mut count, mut through) = self.drop_record();
        let counted = through;
        for &seq in doomed.iter().filter(|&&seq| seq > counted) {
            let carried = fs::read(self.path(seq, ".json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|report| report.get("spool_dropped")?.as_u64())
                .unwrap_or(0);
            count = count.saturating_add(1).saturating_add(carried);
            through = seq;
        }
        self.write_drop_record(count, through)?;
        for &seq in doomed {
            self.remove(seq)?;
        }
        Ok(excess as u64)
    }
}

/// The sequence number of a spool file name `<20 digits><extension>`.
fn seq_of(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64, dropped: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq},\"spool_dropped\":{dropped}}}").into_bytes()
    }

    #[test]
    fn reports_are_listed_oldest_first_and_removed_with_their_signature() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&tmp.path().join("spool")).unwrap();
        for seq in [10, 9, 100, 11] {
            spool
                .put(seq, &report(seq, 0), &format!("sig {seq}"))
                .unwrap();
        }
        assert_eq!(spool.list().unwrap(), [9, 10, 11, 100], "numeric order");
        assert!(tmp.path().join("spool/00000000000000000100.json").exists());
        let read = spool.read(100).unwrap();
        assert_eq!(read.bytes, report(100, 0));
        assert_eq!(read.signature.as_deref(), Some("sig 100"));
        spool.remove(10).unwrap();
        spool.remove(10).unwrap();
        assert_eq!(spool.list().unwrap(), [9, 11, 100]);
        assert!(!tmp
            .path()
            .join("spool/00000000000000000010.minisig")
            .exists());
        // Foreign names are not reports.
        fs::write(tmp.path().join("spool/12.json"), "x").unwrap();
        fs::write(tmp.path().join("spool/notes.txt"), "x").unwrap();
        assert_eq!(spool.list().unwrap(), [9, 11, 100]);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them_once() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&tmp.path().join("spool")).unwrap();
        for seq in 1..=5 {
            spool.put(seq, &report(seq, 0), "s").unwrap();
        }
        assert_eq!(spool.make_room(10).unwrap(), 0);
        assert_eq!(spool.dropped(), 0);
        // Room for one more under a bound of 3: 1, 2 and 3 go.
        assert_eq!(spool.make_room(3).unwrap(), 3);
        assert_eq!(spool.list().unwrap(), [4, 5]);
        assert_eq!(spool.dropped(), 3);
        // The count survives a restart (a new Spool on the same directory).
        let spool = Spool::open(&tmp.path().join("spool")).unwrap();
        assert_eq!(spool.dropped(), 3);
        // A report carrying the count is spooled: the count restarts at 0; dropping
        // that report later counts it and what it carried.
        spool.put(6, &report(6, 3), "s").unwrap();
        spool.clear_dropped().unwrap();
        assert_eq!(spool.dropped(), 0);
        assert_eq!(spool.make_room(1).unwrap(), 3);
        assert_eq!(spool.list().unwrap(), Vec::<u64>::new());
        assert_eq!(spool.dropped(), 1 + 1 + 1 + 3);
    }

    #[test]
    fn a_crash_between_counting_and_removing_does_not_count_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&tmp.path().join("spool")).unwrap();
        for seq in 1..=3 {
            spool.put(seq, &report(seq, 0), "s").unwrap();
        }
        // As if a crash came after the count (2 through seq 2) but before removal.
        spool.write_drop_record(2, 2).unwrap();
        assert_eq!(spool.make_room(2).unwrap(), 2);
        assert_eq!(spool.dropped(), 2, "1 and 2 were counted already");
        assert_eq!(spool.list().unwrap(), [3]);
    }

    #[test]
    fn crash_leftovers_are_neither_sent_nor_mistaken_for_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let spool = Spool::open(&dir).unwrap();
        spool.put(1, &report(1, 0), "s1").unwrap();
        // A crash while spooling 2: its signature landed, its bytes only in a
        // temporary file (a complete one, even).
        fs::write(dir.join("00000000000000000002.minisig"), "s2").unwrap();
        let temporary = dir.join(".00000000000000000002.json.123.abc.0.tmp");
        fs::write(&temporary, report(2, 0)).unwrap();
        assert_eq!(
            spool.list().unwrap(),
            [1],
            "a temporary file is not a report"
        );
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.list().unwrap(), [1], "report 1 is not lost");
        assert!(!temporary.exists() && !dir.join("00000000000000000002.minisig").exists());
        assert_eq!(spool.read(1).unwrap().signature.as_deref(), Some("s1"));
        // A crash while removing 1 (bytes gone, signature left): gone on reopening.
        fs::remove_file(dir.join("00000000000000000001.json")).unwrap();
        let spool = Spool::open(&dir).unwrap();
        assert!(spool.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }
}
