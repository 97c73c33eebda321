//! "Place test call (933)": a real SIP call from the desk into its own core, so a new user sees
//! the whole path work — the core classifies it as a test call, locates it, routes it, and the
//! board shows it, without sounding the alarm. The SIP is [`crate::sipua::CallDialog`].

use std::time::Duration;

use crate::error::DeskError;
use crate::sipua::{CallDialog, CoreSip};

/// How long the answered test call stays up, so the officer sees it connected.
const HOLD: Duration = Duration::from_secs(3);

/// Places the test call to `number` through the core at `core` (UDP or TLS) and returns a
/// one-line result for the officer.
pub async fn place(core: impl Into<CoreSip>, number: &str, hold: Duration) -> Result<String, DeskError> {
    let core = core.into();
    let ruri = format!("sip:{number}@{}", core.addr());
    let mut dialog = CallDialog::new(&core, "sosdesk desk test", "desk-test", ruri, None)
        .await
        .map_err(|message| DeskError::Sip { message })?;
    let host = dialog.local.ip().to_string();
    // Media goes nowhere (a test call carries no audio); the offer is still a valid G.711 one.
    let sdp = format!(
        "v=0\r\no=desk 1 1 IN IP4 {host}\r\ns=sosdesk test call\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    );
    dialog
        .invite(sdp.into_bytes().into(), &[])
        .await
        .map_err(|r| DeskError::sip(&r, format!("test call {number} was not connected: {r}")))?;
    tokio::time::sleep(hold).await;
    match dialog.bye().await {
        Ok(()) => Ok(format!("test call {number} answered by the provider, held {} s and hung up", hold.as_secs())),
        Err(_) => Ok(format!("test call {number} was answered; the hang-up was not confirmed")),
    }
}

/// The default hold time of an answered test call.
pub fn default_hold() -> Duration {
    HOLD
}
