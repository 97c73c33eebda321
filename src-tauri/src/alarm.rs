//! The alarm: a loud two-tone siren, generated in code, looping until every emergency on the
//! board is acknowledged.
//!
//! The audio device lives on its own thread (cpal streams are not `Send`). No device, or one that
//! vanishes while sounding, is reported through [`AlarmReport`] and shown in the app; the alert
//! itself never depends on sound.

use std::num::NonZero;
use std::sync::mpsc;
use std::time::Duration;

use rodio::Source;

/// Output sample rate of the siren.
pub const SAMPLE_RATE: u32 = 48_000;
/// The two tones (Hz) and how long each lasts: a hi-lo pattern, unlike any ringtone or
/// notification chime an office phone or desktop plays.
pub const TONES: [f32; 2] = [960.0, 770.0];
pub const TONE_MS: u32 = 350;
/// Peak amplitude (full scale is 1.0): loud, with headroom so the edges do not clip.
pub const PEAK: f32 = 0.9;

/// An endless hi-lo siren. Each tone is a square-ish wave (fundamental plus 3rd and 5th harmonics,
/// which carry further than a sine in a noisy room) with 5 ms ramps at every change so the
/// switching does not click.
#[derive(Debug, Clone)]
pub struct Siren {
    n: u64,
    /// Phase of the fundamental, kept in [0, 2π) so the tone stays clean however long it plays.
    phase: f32,
}

impl Siren {
    pub fn new() -> Siren {
        Siren { n: 0, phase: 0.0 }
    }
}

impl Default for Siren {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for Siren {
    type Item = f32;

    fn next(&mut self) -> Option<f32> {
        let per_tone = u64::from(SAMPLE_RATE * TONE_MS / 1000);
        let i = self.n % (2 * per_tone);
        let (tone, pos) = if i < per_tone { (TONES[0], i) } else { (TONES[1], i - per_tone) };
        let w = self.phase;
        self.phase = (w + std::f32::consts::TAU * tone / SAMPLE_RATE as f32) % std::f32::consts::TAU;
        // Normalised so the sum peaks at 1.0 (this three-term partial sum peaks at 0.933).
        let wave = (w.sin() + (3.0 * w).sin() / 3.0 + (5.0 * w).sin() / 5.0) / 0.933;
        let ramp = u64::from(SAMPLE_RATE / 200); // 5 ms
        let edge = pos.min(per_tone - 1 - pos);
        let gain = if edge < ramp { edge as f32 / ramp as f32 } else { 1.0 };
        self.n += 1;
        Some((wave * gain * PEAK).clamp(-1.0, 1.0))
    }
}

impl Source for Siren {
    fn current_span_len(&self) -> Option<usize> {
        None
    }
    fn channels(&self) -> rodio::ChannelCount {
        NonZero::new(1).unwrap()
    }
    fn sample_rate(&self) -> rodio::SampleRate {
        NonZero::new(SAMPLE_RATE).unwrap()
    }
    fn total_duration(&self) -> Option<Duration> {
        None
    }
}

/// What the audio thread reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmReport {
    /// The siren is playing on the device.
    Sounding,
    Stopped,
    /// No device could be opened, or it failed: `String` says why, for the status bar.
    NoDevice(String),
}

enum Command {
    Start,
    Stop,
}

/// Handle to the audio thread.
pub struct Alarm {
    tx: mpsc::Sender<Command>,
}

impl Alarm {
    /// Starts the audio thread; `report` is called on it with every state change.
    pub fn spawn(report: impl Fn(AlarmReport) + Send + 'static) -> std::io::Result<Alarm> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("sosdesk-alarm".into()).spawn(move || audio_thread(rx, report))?;
        Ok(Alarm { tx })
    }

    pub fn start(&self) {
        let _ = self.tx.send(Command::Start);
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

fn audio_thread(rx: mpsc::Receiver<Command>, report: impl Fn(AlarmReport)) {
    let (err_tx, err_rx) = mpsc::channel::<String>();
    let mut sink: Option<rodio::MixerDeviceSink> = None;
    let mut player: Option<rodio::Player> = None;
    loop {
        // Wake up now and then to notice a device that failed while the siren was playing.
        let cmd = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(c) => Some(c),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Ok(e) = err_rx.try_recv() {
            tracing::warn!(error = %e, "audio device failed; the alarm is visual only");
            player = None;
            sink = None;
            report(AlarmReport::NoDevice(format!("audio device failed: {e}")));
        }
        match cmd {
            Some(Command::Start) => {
                if player.is_some() {
                    continue;
                }
                if sink.is_none() {
                    let err_tx = err_tx.clone();
                    let opened = rodio::DeviceSinkBuilder::from_default_device().and_then(|b| {
                        b.with_error_callback(move |e| {
                            let _ = err_tx.send(e.to_string());
                        })
                        .open_stream()
                    });
                    match opened {
                        Ok(mut s) => {
                            s.log_on_drop(false);
                            sink = Some(s);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "no audio device; the alarm is visual only");
                            report(AlarmReport::NoDevice(format!("no audio device ({e})")));
                            continue;
                        }
                    }
                }
                let Some(s) = &sink else { continue };
                let p = rodio::Player::connect_new(s.mixer());
                p.append(Siren::new());
                p.play();
                player = Some(p);
                report(AlarmReport::Sounding);
            }
            Some(Command::Stop) => {
                if let Some(p) = player.take() {
                    p.stop();
                }
                // Release the device between alarms: other programs may use it, and a device
                // that was unplugged meanwhile is found again at the next alarm.
                sink = None;
                report(AlarmReport::Stopped);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders the siren offline (no device) and checks what an officer would hear: loud, both
    /// tones in turn, no clipping, and it goes on for as long as it is played.
    #[test]
    fn siren_is_loud_two_tone_and_endless() {
        let per_tone = (SAMPLE_RATE * TONE_MS / 1000) as usize;
        let samples: Vec<f32> = Siren::new().take(per_tone * 6).collect();
        assert_eq!(samples.len(), per_tone * 6, "the siren must not end by itself");
        let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.8 && peak <= 1.0, "peak {peak}");
        let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
        assert!(rms > 0.45, "rms {rms}: too quiet for an alarm");
        // The fundamental of each segment, from upward zero crossings.
        let freq = |seg: &[f32]| {
            let ups = seg.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
            ups as f32 * SAMPLE_RATE as f32 / seg.len() as f32
        };
        for k in 0..6 {
            let seg = &samples[k * per_tone..(k + 1) * per_tone];
            let expect = TONES[k % 2];
            let f = freq(seg);
            assert!((f - expect).abs() < expect * 0.03, "segment {k}: {f} Hz, want {expect}");
        }
        // No click at a tone change: the samples around the boundary are ramped down.
        assert!(samples[per_tone - 1].abs() < 0.05 && samples[per_tone].abs() < 0.05);
        assert_eq!(Siren::new().channels().get(), 1);
    }
}
