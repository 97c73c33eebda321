//! Call history: search, a call's detail (its audit events, the hash chain, the recording
//! checked against its audited hash), CSV export, and playing a recording.

use std::path::PathBuf;

use chrono::{Local, NaiveDate, TimeZone, Utc};
use sosdesk::audit::{AuditRecord, HistoryQuery};

use super::link::{history_params, Link};
use super::Desk;
use crate::audio::{StereoPcm, StreamReport};
use crate::error::DeskError;
use crate::model::*;

impl Desk {
    pub async fn search_history(&self, filter: &HistoryFilter) -> Result<Vec<sosdesk::audit::CallSummary>, DeskError> {
        let link = self.link().await?;
        link.search(history_query(filter).map_err(DeskError::invalid)?).await
    }

    pub async fn call_detail(&self, call_id: &str) -> Result<CallDetail, DeskError> {
        match self.link().await? {
            Link::Embedded(core) => {
                let store = core.store();
                let summary = store
                    .call_summary(call_id)
                    .await
                    .map_err(|e| DeskError::store(e.to_string()))?
                    .ok_or_else(|| DeskError::not_in_log(call_id))?;
                let events: Vec<AuditRecord> =
                    store.call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))?;
                let chain = store.chain_check().await;
                let recording = recording_check(&events).await;
                Ok(CallDetail { summary, events, chain, recording })
            }
            Link::Remote(r) => {
                let d = r.api().call_checked(call_id).await?;
                let summary = d.summary.ok_or_else(|| DeskError::not_in_log(call_id))?;
                // The file is on the core's machine: this desk can name it, not check or play it.
                let recording = recorded(&d.events).map(|(path, sha256, duration_ms)| RecordingCheck {
                    detail: format!("recorded on the core's machine as {path}: play it there"),
                    path,
                    duration_ms,
                    sha256,
                    ok: false,
                });
                let chain = d.chain.unwrap_or_else(|| ChainCheck {
                    ok: false,
                    rows_checked: 0,
                    detail: "the core did not check the hash chain".into(),
                });
                Ok(CallDetail { summary, events: d.events, chain, recording })
            }
        }
    }

    /// Writes the audit rows of the calls `filter` finds to a CSV file in the export folder
    /// (written whole, then renamed into place) and returns its path.
    pub async fn export_history_csv(&self, filter: &HistoryFilter) -> Result<String, DeskError> {
        let q = history_query(filter).map_err(DeskError::invalid)?;
        let buf = match self.link().await? {
            Link::Embedded(core) => {
                let mut buf = Vec::new();
                core.store()
                    .export_csv_matching(&mut buf, Some(&q))
                    .await
                    .map_err(|e| DeskError::store(e.to_string()))?;
                buf
            }
            Link::Remote(r) => r.api().history_csv(&history_params(q)).await?.to_vec(),
        };
        std::fs::create_dir_all(&self.export_dir)
            .map_err(|e| DeskError::file(format!("cannot create {}: {e}", self.export_dir.display())))?;
        let name = format!("sosdesk-history-{}.csv", Local::now().format("%Y%m%d-%H%M%S"));
        let path = self.export_dir.join(name);
        let tmp = path.with_extension("csv.part");
        std::fs::write(&tmp, &buf)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| DeskError::file(format!("cannot write {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    }

    /// Plays the call's recording, after checking it against the hash in the audit log (a file
    /// that was altered is refused, and says so).
    pub async fn play_recording(&self, call_id: &str) -> Result<Playback, DeskError> {
        let core = match self.link().await? {
            Link::Embedded(core) => core,
            Link::Remote(_) => return Err(DeskError::audio("the recording is on the core's machine: play it there")),
        };
        let events = core.store().call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))?;
        let check = recording_check(&events).await.ok_or_else(|| DeskError::audio("this call has no recording"))?;
        if !check.ok {
            return Err(DeskError::audio(check.detail));
        }
        let path = PathBuf::from(&check.path);
        let (left, right) = tokio::task::spawn_blocking(move || sosdesk::media::wav::read_stereo(&path))
            .await
            .map_err(|e| DeskError::internal(e.to_string()))?
            .map_err(|e| DeskError::audio(format!("cannot read the recording: {e}")))?;
        // Lock order everywhere: the desk's state, then the audio handle (see settle_alarm).
        let mut inner = self.lock();
        let audio = self.audio.lock().unwrap_or_else(|p| p.into_inner());
        let out = audio.as_ref().ok_or_else(|| DeskError::audio("no audio output: the audio thread did not start"))?;
        if let Some((old, _)) = inner.playback.take() {
            out.stop(old);
        }
        let id = inner.next_audio_id;
        inner.next_audio_id += 1;
        inner.playback = Some((id, call_id.to_string()));
        out.play(id, StereoPcm::new(&left, &right));
        Ok(Playback { call_id: call_id.to_string(), state: PlaybackState::Playing, detail: "starting playback".into() })
    }

    pub fn stop_playback(&self) -> Option<Playback> {
        let (id, call_id) = self.lock().playback.take()?;
        if let Some(out) = self.audio.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            out.stop(id);
        }
        let p = Playback { call_id, state: PlaybackState::Stopped, detail: "stopped".into() };
        self.ui.playback(&p);
        Some(p)
    }

    /// The output device's report on the recording being played.
    pub(super) fn on_playback_audio(&self, id: u64, report: StreamReport) {
        let mut inner = self.lock();
        if let Some((_, call_id)) = inner.playback.clone().filter(|(p, _)| *p == id) {
            let p = match report {
                StreamReport::Playing => Playback {
                    call_id,
                    state: PlaybackState::Playing,
                    detail: "playing on the default audio output".into(),
                },
                StreamReport::Finished => {
                    inner.playback = None;
                    Playback { call_id, state: PlaybackState::Finished, detail: "played to the end".into() }
                }
                StreamReport::NoDevice(e) => {
                    inner.playback = None;
                    Playback { call_id, state: PlaybackState::Failed, detail: e }
                }
            };
            drop(inner);
            self.ui.playback(&p);
        }
    }
}

/// The call's recording from its audit events, with the file checked against the audited hash.
async fn recording_check(events: &[AuditRecord]) -> Option<RecordingCheck> {
    let (path, sha256, duration_ms) = recorded(events)?;
    let p = PathBuf::from(&path);
    let hashed = tokio::task::spawn_blocking(move || sosdesk::media::wav::hash_file(&p)).await;
    let (ok, detail) = match hashed {
        Ok(Ok(h)) if h == sha256 => (true, "recording intact: its SHA-256 matches the audit log".to_string()),
        Ok(Ok(h)) => (false, format!("RECORDING ALTERED: its SHA-256 is {h}, the audit log says {sha256}")),
        Ok(Err(e)) => (false, format!("the recording cannot be read: {e}")),
        Err(e) => (false, format!("the recording could not be checked: {e}")),
    };
    Some(RecordingCheck { path, duration_ms, sha256, ok, detail })
}

/// The recording the audit log names for a call: path, SHA-256, duration.
fn recorded(events: &[AuditRecord]) -> Option<(String, String, u64)> {
    events.iter().rev().find_map(|r| match &r.event.kind {
        sosdesk::events::CallEventKind::Recorded { path, sha256, duration_ms } => {
            Some((path.clone(), sha256.clone(), *duration_ms))
        }
        _ => None,
    })
}

/// The officer's filter as a store query: local calendar days, both ends inclusive.
pub fn history_query(f: &HistoryFilter) -> Result<HistoryQuery, String> {
    let day = |s: &str, what: &str| -> Result<Option<NaiveDate>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Some).map_err(|_| format!("{what} date {s:?} is not YYYY-MM-DD"))
    };
    let from = day(&f.from_date, "from")?.map(local_midnight);
    // Up to the start of the day after: the "to" day is included.
    let until = match day(&f.to_date, "to")? {
        Some(d) => Some(local_midnight(d.succ_opt().ok_or("to date out of range")?)),
        None => None,
    };
    let text = Some(f.text.trim().to_string()).filter(|t| !t.is_empty());
    Ok(HistoryQuery {
        text,
        from,
        until,
        outcome: f.outcome,
        exclude_tests: !f.include_tests,
        limit: f.limit.unwrap_or(200).min(10_000),
    })
}

fn local_midnight(d: NaiveDate) -> chrono::DateTime<Utc> {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A DST change at midnight makes it ambiguous or missing: take the earliest valid instant.
    match Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => Local
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive)),
    }
}
