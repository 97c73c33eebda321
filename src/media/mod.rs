//! Media anchoring for emergency calls (issue 5): sosdesk puts itself in the RTP path of every
//! anchored call so a security desk can be conferenced in and the call recorded.
//!
//! - [`codec`]: G.711 µ-law / A-law.
//! - [`sdp`]: the audio part of SDP offer/answer (RFC 3264).
//! - [`mixer`]: the conference mixer, sans-I/O and sample-exact.
//! - [`session`]: one call's media, sans-I/O: relay, transcoding, telephone events, symmetric
//!   RTP, recording frames.
//! - [`wav`]: the recording file.
//! - [`dtmf`]: digits a called party presses (RFC 4733 events, SIP INFO bodies).
//! - [`speech`]: a synthesiser's WAV at 8 kHz, the alert tone (the voice alert channel).
//! - [`runner`]: the tokio task that gives a session its sockets and its clock, and the RTP port
//!   pool.

pub mod codec;
pub mod dtmf;
pub mod mixer;
pub mod runner;
pub mod sdp;
pub mod session;
pub mod speech;
pub mod wav;

pub use codec::{Codec, FRAME, SAMPLE_RATE};
pub use mixer::{LegId, Mixer};
pub use sdp::{AudioSdp, Direction, LocalSdp};
pub use session::{LegParams, MediaSession, Role};
