//! This desk's leg in a call (the officer's Join / Listen / Talk / Mute / Leave, over
//! `callleg.rs`), the desk account it joins with, and the test call (`testcall.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::link::Link;
use super::Desk;
use crate::audio::{LiveBuffer, LiveSource, StreamReport};
use crate::callleg::{JoinRequest, LegCommand, LegUpdate};
use crate::error::DeskError;
use crate::model::*;
use crate::sipua::Credentials;

/// This desk's leg: what the UI shows, and the channel to its task.
pub(super) struct LegSlot {
    status: CallLeg,
    commands: tokio::sync::mpsc::Sender<LegCommand>,
    audio_id: u64,
    buffer: Arc<Mutex<LiveBuffer>>,
    /// The call audio was handed to the output device (on the first Connected).
    playing: bool,
}

impl LegSlot {
    fn live(&self) -> bool {
        matches!(self.status.state, LegState::Joining | LegState::Connected)
    }
}

/// Words for the officer about a connected leg.
fn leg_detail(mode: LegMode, muted: bool) -> String {
    match (mode, muted) {
        (LegMode::Listen, _) => "Listening: you hear the caller and the operator; they do not hear you".into(),
        (LegMode::Talk, false) => "Talking: the caller and the operator hear you".into(),
        (LegMode::Talk, true) => "Muted: you hear the call; nobody hears you".into(),
    }
}

impl Desk {
    /// A real SIP test call to the config's test number, through the embedded core.
    pub async fn place_test_call(&self, hold: Duration) -> Result<String, DeskError> {
        let addr =
            self.link().await?.sip().ok_or_else(|| DeskError::not_connected("no SIP address of the core to call"))?;
        let number =
            self.lock().test_number.clone().ok_or_else(|| {
                DeskError::config("no test number in the config (a [[policy.number]] with test = true)")
            })?;
        crate::testcall::place(addr, &number, hold).await
    }

    pub fn leg(&self) -> Option<CallLeg> {
        self.lock().leg.as_ref().map(|l| l.status.clone())
    }

    /// Joins `call_id` through the core's conference address with this desk's account. One leg
    /// at a time: an officer is in one call. Returns at once (state `joining`); the outcome
    /// arrives as `desk:leg`.
    pub async fn join_call(self: &Arc<Self>, call_id: &str, mode: LegMode) -> Result<CallLeg, DeskError> {
        let link = self.link().await?;
        let addr = link.sip().ok_or_else(|| DeskError::not_connected("no SIP address of the core to join through"))?;
        let mut inner = self.lock();
        if let Some(l) = inner.leg.as_ref().filter(|l| l.live()) {
            return Err(DeskError::leg(if l.status.call_id == call_id {
                "this desk is already in this call"
            } else {
                "this desk is in another call: leave it first"
            }));
        }
        if inner.board.get(call_id).is_none() {
            return Err(DeskError::not_on_board(call_id));
        }
        let account = match &link {
            Link::Embedded(_) => {
                pick_account(&inner.accounts, inner.settings.desk_account.as_deref()).cloned().ok_or_else(|| {
                    DeskError::config("no desk account in the config ([[desk]]): this desk cannot join calls")
                })?
            }
            // The account of the remote desk file, under the name the core gave it.
            Link::Remote(r) => sosdesk::config::DeskAccountConfig {
                name: r
                    .info()
                    .map(|i| i.name)
                    .ok_or_else(|| DeskError::not_connected("not connected to the core yet"))?,
                username: r.config.username.clone(),
                password: r.config.password.clone(),
                talk: r.info().is_some_and(|i| i.talk),
            },
        };
        let id = inner.next_audio_id;
        inner.next_audio_id += 1;
        let buffer = Arc::new(Mutex::new(LiveBuffer::default()));
        let status = CallLeg {
            call_id: call_id.to_string(),
            desk: account.name.clone(),
            mode,
            state: LegState::Joining,
            muted: false,
            detail: format!("joining as {} ({})…", account.name, account.username),
            level_dbfs: -90.0,
            hearing: false,
            packets: 0,
            speaker: Component::ok("the audio output opens when the call connects"),
            microphone: None,
            since: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let me = Arc::downgrade(self);
        let reporter: crate::callleg::Reporter = Arc::new(move |u| {
            if let Some(desk) = me.upgrade() {
                desk.on_leg_update(id, u);
            }
        });
        let request = JoinRequest {
            core: addr,
            call_id: call_id.to_string(),
            desk_name: account.name.clone(),
            credentials: Credentials { username: account.username.clone(), password: account.password.clone() },
            mode,
        };
        let commands = crate::callleg::spawn(request, buffer.clone(), reporter);
        inner.leg = Some(LegSlot { status: status.clone(), commands, audio_id: id, buffer, playing: false });
        drop(inner);
        tracing::info!(call = call_id, desk = %account.name, ?mode, "joining the call");
        self.ui.leg(&status);
        Ok(status)
    }

    async fn leg_command(&self, cmd: LegCommand) -> Result<(), DeskError> {
        let tx = self
            .lock()
            .leg
            .as_ref()
            .filter(|l| l.live())
            .map(|l| l.commands.clone())
            .ok_or_else(|| DeskError::leg("this desk is not in a call"))?;
        tx.send(cmd).await.map_err(|_| DeskError::leg("the call leg has ended"))
    }

    /// Listen ↔ Talk: a re-INVITE the core checks again; a refusal leaves the leg as it was.
    pub async fn set_leg_mode(&self, mode: LegMode) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Mode(mode)).await
    }

    pub async fn mute_leg(&self, muted: bool) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Mute(muted)).await
    }

    /// Leaves the call (BYE); the call itself goes on.
    pub async fn leave_call(&self) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Leave).await
    }

    fn on_leg_update(&self, id: u64, update: LegUpdate) {
        let mut start_audio = None;
        let mut stop_audio = false;
        let mut inner = self.lock();
        let Some(slot) = inner.leg.as_mut().filter(|l| l.audio_id == id) else { return };
        let s = &mut slot.status;
        match update {
            LegUpdate::Connected { mode } => {
                s.state = LegState::Connected;
                s.mode = mode;
                s.detail = leg_detail(mode, s.muted);
                if mode == LegMode::Listen {
                    s.microphone = None;
                } else if s.microphone.is_none() {
                    s.microphone = Some(Component::ok("opening the microphone"));
                }
                if !slot.playing {
                    slot.playing = true;
                    if self.audio.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        start_audio = Some(slot.buffer.clone());
                    } else {
                        s.speaker = Component::failed(
                            "no audio output (the audio thread did not start): the call audio cannot be heard here; \
                             the leg stays connected",
                        );
                    }
                }
            }
            LegUpdate::ModeRefused { wanted, reason } => {
                let what = if wanted == LegMode::Talk { "Talk" } else { "Listen" };
                s.detail = format!("{what} refused: {reason}. {}", leg_detail(s.mode, s.muted));
            }
            LegUpdate::Muted(m) => {
                s.muted = m;
                s.detail = leg_detail(s.mode, m);
                if s.mode == LegMode::Talk {
                    s.microphone = Some(if m {
                        Component::ok("microphone off (muted)")
                    } else {
                        Component::ok("opening the microphone")
                    });
                }
            }
            LegUpdate::Level { dbfs, packets } => {
                s.level_dbfs = dbfs;
                s.hearing = dbfs > -55.0;
                s.packets = packets;
            }
            LegUpdate::Microphone(Ok(())) => s.microphone = Some(Component::ok("microphone capturing")),
            LegUpdate::Microphone(Err(e)) => {
                tracing::warn!(error = %e, "no microphone for the call; the leg stays connected");
                s.microphone = Some(Component::failed(format!("{e}: you are not heard; the leg stays connected")));
            }
            LegUpdate::Ended { reason } => {
                s.state = LegState::Ended;
                s.detail = format!("Left the call: {reason}");
                s.hearing = false;
                stop_audio = true;
            }
            LegUpdate::Failed { reason } => {
                tracing::warn!(call = %s.call_id, %reason, "joining the call failed");
                s.state = LegState::Failed;
                s.detail = reason;
                s.hearing = false;
                stop_audio = true;
            }
        }
        let leg = slot.status.clone();
        drop(inner);
        if let Some(out) = self.audio.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if let Some(buffer) = start_audio {
                out.play(id, LiveSource::new(buffer));
            }
            if stop_audio {
                out.stop(id);
            }
        }
        self.ui.leg(&leg);
    }

    /// The output device's report on a stream: this desk's call audio is handled here; any
    /// other stream's report is given back.
    pub(super) fn on_leg_audio(&self, id: u64, report: StreamReport) -> Option<StreamReport> {
        let mut inner = self.lock();
        let Some(slot) = inner.leg.as_mut().filter(|l| l.audio_id == id) else { return Some(report) };
        slot.status.speaker = match report {
            StreamReport::Playing => Component::ok("call audio playing on the default audio output"),
            StreamReport::Finished => return None,
            StreamReport::NoDevice(e) => {
                tracing::warn!(error = %e, "call audio cannot be played; the leg stays connected");
                Component::failed(format!("{e}: the call audio cannot be heard here; the leg stays connected"))
            }
        };
        let leg = slot.status.clone();
        drop(inner);
        self.ui.leg(&leg);
        None
    }
}

/// The account this desk joins with: the one named in the settings, else the config's first.
fn pick_account<'a>(
    accounts: &'a [sosdesk::config::DeskAccountConfig],
    wanted: Option<&str>,
) -> Option<&'a sosdesk::config::DeskAccountConfig> {
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) => accounts.iter().find(|a| a.username == w),
        None => accounts.first(),
    }
}

pub(super) fn join_info(
    accounts: &[sosdesk::config::DeskAccountConfig],
    two_way: Vec<String>,
    wanted: Option<&str>,
) -> JoinInfo {
    let usernames = accounts.iter().map(|a| a.username.clone()).collect();
    match pick_account(accounts, wanted) {
        Some(a) => join_as(&a.name, &a.username, a.talk, two_way, usernames),
        None => JoinInfo {
            desk: None,
            username: None,
            may_talk: false,
            two_way_policies: two_way,
            accounts: usernames,
            detail: match wanted {
                Some(w) if !accounts.is_empty() => format!("no desk account {w:?} in the config: joining calls is off"),
                _ => "no [[desk]] account in the config: joining calls is off".into(),
            },
        },
    }
}

/// How a desk with this account joins calls (an embedded desk's `[[desk]]`, or what a remote
/// core said about the remote desk's account).
pub(super) fn join_as(name: &str, username: &str, talk: bool, two_way: Vec<String>, accounts: Vec<String>) -> JoinInfo {
    JoinInfo {
        desk: Some(name.to_string()),
        username: Some(username.to_string()),
        may_talk: talk,
        two_way_policies: two_way,
        accounts,
        detail: format!("joins calls as {name} ({username}){}", if talk { "" } else { ", listen only" }),
    }
}
