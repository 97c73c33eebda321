//! The crash journal: every call event is appended to a file before the bytes it goes with
//! leave sosdesk, so a crash (kill -9, a panic, the OOM killer) cannot lose from the audit log a
//! call that the provider received.
//!
//! The audit writer commits in batches, a few milliseconds behind the engine; whatever was
//! still queued when the process died used to be lost (measured: 43 and 418 of ~2,900 calls at
//! 1,000 calls/s). The journal closes that gap without making the outbound INVITE wait for a
//! disk: the engine task writes each turn's events with one `write` to the page cache (a few
//! microseconds), then sends the turn's bytes. The kernel keeps what was written whatever
//! happens to the process, so at the next start [`recover`] finds every event the dead process
//! produced, and the core appends those its audit log lacks before it serves.
//!
//! The bound: every event produced before a process crash is recovered. Against a crash of the
//! whole machine (power loss, kernel panic), the journal is only as durable as the kernel's
//! write-back (about 5 s by default, `vm.dirty_expire_centisecs`) and the audit log's own commits
//! (fsynced, usually within milliseconds of the event) are the guarantee.
//!
//! Layout: a folder of segments, `00000001.jsonl`, `00000002.jsonl`, …, one event as JSON per
//! line. The engine task starts a new segment every [`SEGMENT_BYTES`]; the audit writer deletes a
//! segment once every event in it is committed (`AuditWriter::release`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::events::CallEvent;

/// A segment is closed (and handed to the writer to delete once committed) past this size.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The open segment the engine task appends to.
pub struct Journal {
    dir: PathBuf,
    segment: u64,
    file: File,
    written: u64,
    line: Vec<u8>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.jsonl"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                let n = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(n) = n {
                    found.push((n, path));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort();
    Ok(found)
}

/// What a journal folder holds: every event in its segments, in the order written, and the
/// segments (to delete once their events are in the audit log). A line cut short by the crash
/// is left out (its event was never followed by any bytes on the wire).
pub fn recover(dir: &Path) -> io::Result<(Vec<CallEvent>, Vec<PathBuf>)> {
    let mut events = Vec::new();
    let mut paths = Vec::new();
    for (_, path) in segments(dir)? {
        let f = File::open(&path)?;
        for line in io::BufReader::new(f).split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<CallEvent>(&line) {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "journal line not readable (cut short by a crash?): skipped")
                }
            }
        }
        paths.push(path);
    }
    Ok((events, paths))
}

impl Journal {
    /// A new segment in `dir` (created if missing), numbered after any already there.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let next = segments(dir)?.last().map(|(n, _)| n + 1).unwrap_or(1);
        Ok(Journal {
            dir: dir.to_path_buf(),
            segment: next,
            file: create(&segment_path(dir, next))?,
            written: 0,
            line: Vec::new(),
        })
    }

    /// Appends `events` with one write. Returns once the kernel has them.
    pub fn append<'a>(&mut self, events: impl Iterator<Item = &'a CallEvent>) -> io::Result<()> {
        self.line.clear();
        for ev in events {
            serde_json::to_writer(&mut self.line, ev).map_err(io::Error::other)?;
            self.line.push(b'\n');
        }
        if self.line.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.line)?;
        self.written += self.line.len() as u64;
        Ok(())
    }

    /// Past [`SEGMENT_BYTES`], starts a new segment and returns the finished one's path.
    pub fn rotate_if_full(&mut self) -> io::Result<Option<PathBuf>> {
        if self.written < SEGMENT_BYTES {
            return Ok(None);
        }
        let done = segment_path(&self.dir, self.segment);
        let next = self.segment + 1;
        self.file = create(&segment_path(&self.dir, next))?;
        self.segment = next;
        self.written = 0;
        Ok(Some(done))
    }

    /// The path of the segment being written.
    pub fn current(&self) -> PathBuf {
        segment_path(&self.dir, self.segment)
    }
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new().create_new(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CallEventKind, Caller, CALL_EVENT_VERSION};
    use crate::location::LocationSnapshot;

    fn ev(call: &str, seq: u32) -> CallEvent {
        CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: call.into(),
            seq,
            at: chrono::Utc::now(),
            caller: Caller {
                number: "1001".into(),
                display_name: None,
                uri: "sip:1001@x".into(),
                source: "udp:x".into(),
            },
            dialed: "911".into(),
            normalized: "911".into(),
            test_call: false,
            policy: "p".into(),
            site: None,
            location: LocationSnapshot::none(),
            route: None,
            kind: CallEventKind::Detected,
        }
    }

    #[test]
    fn what_was_appended_is_recovered_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("journal");
        let mut journal = Journal::open(&j).unwrap();
        journal.append([ev("a", 1), ev("a", 2)].iter()).unwrap();
        journal.append([ev("b", 1)].iter()).unwrap();
        // A crash in the middle of a write: half a line at the end.
        let mut f = OpenOptions::new().append(true).open(journal.current()).unwrap();
        f.write_all(br#"{"version":1,"call_id":"c","#).unwrap();
        let (events, paths) = recover(&j).unwrap();
        let ids: Vec<_> = events.iter().map(|e| (e.call_id.as_str(), e.seq)).collect();
        assert_eq!(ids, [("a", 1), ("a", 2), ("b", 1)]);
        assert_eq!(paths, [journal.current()]);
        // A new journal continues after the segments it found.
        let next = Journal::open(&j).unwrap();
        assert!(next.current() > journal.current());
    }

    #[test]
    fn segments_rotate_past_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let first = journal.current();
        let mut rotated = None;
        for n in 0..20_000 {
            journal.append([ev("call", n)].iter()).unwrap();
            if let Some(done) = journal.rotate_if_full().unwrap() {
                rotated = Some(done);
                break;
            }
        }
        assert_eq!(rotated, Some(first));
        assert_ne!(journal.current(), rotated.unwrap());
        assert_eq!(recover(dir.path()).unwrap().1.len(), 2);
    }

    #[test]
    fn no_folder_is_nothing_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (events, paths) = recover(&dir.path().join("none")).unwrap();
        assert!(events.is_empty() && paths.is_empty());
    }
}
