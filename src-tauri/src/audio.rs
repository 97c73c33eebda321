//! The desk's sound: one output device shared by the alarm, the audio of a joined call and the
//! playback of recordings, and the microphone for talking in a call.
//!
//! Everything plays through one rodio mixer on one device, opened while anything plays and
//! released when nothing does. Sharing it is what guarantees that hearing a call never stops the
//! alarm of a second, unacknowledged call: a plain ALSA device can be opened only once, so a
//! second stream of our own would fail exactly when it matters.
//!
//! cpal streams are not `Send`, so the device lives on its own thread, driven by [`Command`]s.
//! No device, or one that vanishes, is reported through [`AudioReport`] and shown in the app;
//! alerts and calls never depend on sound.

use std::collections::{HashMap, VecDeque};
use std::num::NonZero;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rodio::Source;

use crate::alarm::Siren;

/// G.711's rate: call audio and recordings are 8 kHz mono.
pub const CALL_RATE: u32 = 8000;
/// One RTP frame of call audio (20 ms).
pub const FRAME: usize = 160;

/// What the alarm is doing on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmReport {
    /// The siren is playing on the device.
    Sounding,
    Stopped,
    /// No device could be opened, or it failed: `String` says why, for the status bar.
    NoDevice(String),
}

/// What a call-audio or playback stream is doing on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamReport {
    Playing,
    /// A finite stream (a recording) played to its end.
    Finished,
    /// No device, or it failed; the stream is dropped.
    NoDevice(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioReport {
    Alarm(AlarmReport),
    Stream { id: u64, report: StreamReport },
}

enum Command {
    StartAlarm,
    StopAlarm,
    Play { id: u64, source: Box<dyn Source + Send> },
    Stop { id: u64 },
}

/// Handle to the audio output thread.
pub struct AudioOut {
    tx: mpsc::Sender<Command>,
}

impl AudioOut {
    /// Starts the audio thread; `report` is called on it with every state change.
    pub fn spawn(report: impl Fn(AudioReport) + Send + 'static) -> std::io::Result<AudioOut> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("sosdesk-audio".into()).spawn(move || output_thread(rx, report))?;
        Ok(AudioOut { tx })
    }

    pub fn start_alarm(&self) {
        let _ = self.tx.send(Command::StartAlarm);
    }

    pub fn stop_alarm(&self) {
        let _ = self.tx.send(Command::StopAlarm);
    }

    /// Plays `source` (mono or stereo, any rate: the mixer converts) under `id` until it ends or
    /// [`AudioOut::stop`] is called.
    pub fn play(&self, id: u64, source: impl Source + Send + 'static) {
        let _ = self.tx.send(Command::Play { id, source: Box::new(source) });
    }

    pub fn stop(&self, id: u64) {
        let _ = self.tx.send(Command::Stop { id });
    }
}

/// How often a wanted alarm without a device tries the device again.
const RETRY_ALARM: Duration = Duration::from_secs(2);

fn output_thread(rx: mpsc::Receiver<Command>, report: impl Fn(AudioReport)) {
    let (err_tx, err_rx) = mpsc::channel::<String>();
    let mut sink: Option<rodio::MixerDeviceSink> = None;
    let mut alarm: Option<rodio::Player> = None;
    // The alarm is wanted (an unacknowledged emergency) but has no device: tried again every
    // RETRY_ALARM, so a headset replugged or a sound server restarted brings the siren back
    // without waiting for the next emergency. The last failure, reported once until it changes.
    let mut want_alarm = false;
    let mut retry_alarm_at: Option<std::time::Instant> = None;
    let mut alarm_error: Option<String> = None;
    let mut streams: HashMap<u64, rodio::Player> = HashMap::new();
    loop {
        // Wake up now and then to notice a failed device and recordings that played to the end.
        let cmd = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(c) => Some(c),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Ok(e) = err_rx.try_recv() {
            tracing::warn!(error = %e, "audio device failed");
            let why = format!("audio device failed: {e}");
            if alarm.take().is_some() {
                report(AudioReport::Alarm(AlarmReport::NoDevice(why.clone())));
                alarm_error = Some(why.clone());
                retry_alarm_at = Some(std::time::Instant::now() + RETRY_ALARM);
            }
            for (id, _) in streams.drain() {
                report(AudioReport::Stream { id, report: StreamReport::NoDevice(why.clone()) });
            }
            sink = None;
        }
        let finished: Vec<u64> = streams.iter().filter(|(_, p)| p.empty()).map(|(id, _)| *id).collect();
        for id in finished {
            streams.remove(&id);
            report(AudioReport::Stream { id, report: StreamReport::Finished });
        }
        let open = |sink: &mut Option<rodio::MixerDeviceSink>| -> Result<(), String> {
            if sink.is_some() {
                return Ok(());
            }
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
                    *sink = Some(s);
                    Ok(())
                }
                Err(e) => {
                    // Logged by the caller, once per change (a wanted alarm tries again and again).
                    tracing::debug!(error = %e, "no audio output device");
                    Err(format!("no audio output device ({e})"))
                }
            }
        };
        let retry_due = retry_alarm_at.is_some_and(|t| std::time::Instant::now() >= t);
        let start_alarm = match cmd {
            Some(Command::StartAlarm) => {
                want_alarm = true;
                true
            }
            _ => want_alarm && alarm.is_none() && retry_due,
        };
        if start_alarm && alarm.is_none() {
            match open(&mut sink) {
                Ok(()) => {
                    if let Some(s) = &sink {
                        let p = rodio::Player::connect_new(s.mixer());
                        p.append(Siren::new());
                        p.play();
                        alarm = Some(p);
                        retry_alarm_at = None;
                        alarm_error = None;
                        report(AudioReport::Alarm(AlarmReport::Sounding));
                    }
                }
                Err(e) => {
                    retry_alarm_at = Some(std::time::Instant::now() + RETRY_ALARM);
                    if alarm_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "the alarm cannot sound; trying the device again every 2 s");
                        alarm_error = Some(e.clone());
                        report(AudioReport::Alarm(AlarmReport::NoDevice(e)));
                    }
                }
            }
        }
        match cmd {
            Some(Command::StartAlarm) => {}
            Some(Command::StopAlarm) => {
                want_alarm = false;
                retry_alarm_at = None;
                alarm_error = None;
                if let Some(p) = alarm.take() {
                    p.stop();
                }
                report(AudioReport::Alarm(AlarmReport::Stopped));
            }
            Some(Command::Play { id, source }) => match open(&mut sink) {
                Ok(()) => {
                    let Some(s) = &sink else { continue };
                    let p = rodio::Player::connect_new(s.mixer());
                    p.append(source);
                    p.play();
                    if let Some(old) = streams.insert(id, p) {
                        old.stop();
                    }
                    report(AudioReport::Stream { id, report: StreamReport::Playing });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no audio output device for a stream");
                    report(AudioReport::Stream { id, report: StreamReport::NoDevice(e) })
                }
            },
            Some(Command::Stop { id }) => {
                if let Some(p) = streams.remove(&id) {
                    p.stop();
                }
            }
            None => {}
        }
        if alarm.is_none() && streams.is_empty() && sink.is_some() {
            // Release the device when nothing plays: other programs may use it, and a device
            // that was unplugged meanwhile is found again next time.
            sink = None;
        }
    }
}

// ---------------------------------------------------------------------- call audio (live)

/// The jitter buffer between the RTP receiver and the device: 8 kHz samples pushed as they
/// arrive, pulled by the device's clock. Bounded: when the device is slower than the network
/// (or stopped), the oldest audio goes, so the officer never hears the call late.
#[derive(Debug, Default)]
pub struct LiveBuffer {
    samples: VecDeque<f32>,
}

/// The most call audio held for the device (beyond it the oldest is dropped).
const LIVE_MAX: usize = CALL_RATE as usize / 5; // 200 ms

impl LiveBuffer {
    pub fn push(&mut self, pcm: &[i16]) {
        self.samples.extend(pcm.iter().map(|&s| f32::from(s) / 32768.0));
        let excess = self.samples.len().saturating_sub(LIVE_MAX);
        self.samples.drain(..excess);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The device side of a [`LiveBuffer`]: an endless 8 kHz mono source that plays silence when
/// nothing arrived (a gap in the network), taking a frame at a time to keep the lock rare.
pub struct LiveSource {
    shared: Arc<Mutex<LiveBuffer>>,
    frame: VecDeque<f32>,
}

impl LiveSource {
    pub fn new(shared: Arc<Mutex<LiveBuffer>>) -> LiveSource {
        LiveSource { shared, frame: VecDeque::with_capacity(FRAME) }
    }
}

impl Iterator for LiveSource {
    type Item = f32;

    fn next(&mut self) -> Option<f32> {
        if self.frame.is_empty() {
            let mut b = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            let n = b.samples.len().min(FRAME);
            self.frame.extend(b.samples.drain(..n));
            drop(b);
            // Underrun: a frame of silence, so the device keeps its clock.
            self.frame.resize(FRAME, 0.0);
        }
        self.frame.pop_front()
    }
}

impl Source for LiveSource {
    fn current_span_len(&self) -> Option<usize> {
        None
    }
    fn channels(&self) -> rodio::ChannelCount {
        NonZero::new(1).unwrap()
    }
    fn sample_rate(&self) -> rodio::SampleRate {
        NonZero::new(CALL_RATE).unwrap()
    }
    fn total_duration(&self) -> Option<Duration> {
        None
    }
}

// ---------------------------------------------------------------------- recordings

/// A recording in memory as a finite stereo source (left the caller, right what the caller
/// heard: see docs/media.md).
pub struct StereoPcm {
    interleaved: std::vec::IntoIter<f32>,
    total: Duration,
}

impl StereoPcm {
    pub fn new(left: &[i16], right: &[i16]) -> StereoPcm {
        let n = left.len().min(right.len());
        let mut v = Vec::with_capacity(n * 2);
        for i in 0..n {
            v.push(f32::from(left[i]) / 32768.0);
            v.push(f32::from(right[i]) / 32768.0);
        }
        let total = Duration::from_secs_f64(n as f64 / f64::from(CALL_RATE));
        StereoPcm { interleaved: v.into_iter(), total }
    }
}

impl Iterator for StereoPcm {
    type Item = f32;
    fn next(&mut self) -> Option<f32> {
        self.interleaved.next()
    }
}

impl Source for StereoPcm {
    fn current_span_len(&self) -> Option<usize> {
        Some(self.interleaved.len())
    }
    fn channels(&self) -> rodio::ChannelCount {
        NonZero::new(2).unwrap()
    }
    fn sample_rate(&self) -> rodio::SampleRate {
        NonZero::new(CALL_RATE).unwrap()
    }
    fn total_duration(&self) -> Option<Duration> {
        Some(self.total)
    }
}

// ---------------------------------------------------------------------- microphone

/// The microphone, captured on its own thread as 20 ms frames of 8 kHz mono for a call.
pub struct Microphone {
    stop: Arc<AtomicBool>,
}

impl Microphone {
    /// Opens the default input device and sends frames to `frames` until dropped. `failed` is
    /// called (once, on the capture thread) when there is no device or it stops delivering.
    pub fn open(
        frames: tokio::sync::mpsc::Sender<Vec<i16>>,
        failed: impl FnOnce(String) + Send + 'static,
    ) -> std::io::Result<Microphone> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new().name("sosdesk-microphone".into()).spawn(move || capture(frames, flag, failed))?;
        Ok(Microphone { stop })
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn capture(frames: tokio::sync::mpsc::Sender<Vec<i16>>, stop: Arc<AtomicBool>, failed: impl FnOnce(String)) {
    let opened =
        rodio::microphone::MicrophoneBuilder::new().default_device().and_then(|b| b.default_config()).map(|b| {
            b.prefer_channel_counts([NonZero::new(1).unwrap()])
                .prefer_sample_rates([NonZero::new(CALL_RATE).unwrap(), NonZero::new(48_000).unwrap()])
        });
    let mic = match opened {
        Ok(b) => match b.open_stream() {
            Ok(m) => m,
            Err(e) => return failed(format!("the microphone could not be opened ({e})")),
        },
        Err(e) => return failed(format!("no microphone ({e})")),
    };
    let mono8k =
        rodio::source::UniformSourceIterator::new(mic, NonZero::new(1).unwrap(), NonZero::new(CALL_RATE).unwrap());
    let mut frame = Vec::with_capacity(FRAME);
    for s in mono8k {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        frame.push((s.clamp(-1.0, 1.0) * 32767.0) as i16);
        if frame.len() == FRAME {
            // The sender takes one frame per 20 ms of its own clock; waiting here for room keeps
            // the frames contiguous when the device runs fast (its own small buffer then
            // overflows instead, in whole chunks), rather than sending audio in bursts.
            if frames.blocking_send(std::mem::replace(&mut frame, Vec::with_capacity(FRAME))).is_err() {
                return;
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        failed("the microphone stopped delivering audio".into());
    }
}

/// Loudness of call audio for the level meter: RMS of `pcm` in dBFS (−90 for silence).
pub fn level_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return -90.0;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / pcm.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        -90.0
    } else {
        (20.0 * rms.log10()).max(-90.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_source_plays_what_arrived_then_silence_and_never_ends() {
        let shared = Arc::new(Mutex::new(LiveBuffer::default()));
        shared.lock().unwrap().push(&[16384; 100]);
        let out: Vec<f32> = LiveSource::new(shared.clone()).take(FRAME * 3).collect();
        assert_eq!(out.len(), FRAME * 3);
        assert!(out[..100].iter().all(|&s| (s - 0.5).abs() < 1e-6));
        assert!(out[100..].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn live_buffer_drops_the_oldest_beyond_its_bound() {
        let mut b = LiveBuffer::default();
        b.push(&vec![1; LIVE_MAX]);
        b.push(&[2; 10]);
        assert_eq!(b.len(), LIVE_MAX);
        assert_eq!(b.samples.back(), Some(&(2.0 / 32768.0)));
    }

    #[test]
    fn stereo_recording_source_is_interleaved_and_finite() {
        let s = StereoPcm::new(&[100, 200], &[-100, -200]);
        assert_eq!(s.channels().get(), 2);
        let v: Vec<f32> = s.collect();
        assert_eq!(v.len(), 4);
        assert!(v[0] > 0.0 && v[1] < 0.0 && v[2] > v[0] && v[3] < v[1]);
    }

    #[test]
    fn level_meter_in_dbfs() {
        assert_eq!(level_dbfs(&[0; 160]), -90.0);
        let full: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 32767 } else { -32767 }).collect();
        assert!(level_dbfs(&full) > -0.1);
        let quarter = vec![8192i16; 160];
        assert!((level_dbfs(&quarter) + 12.04).abs() < 0.1);
    }
}
