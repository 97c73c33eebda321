//! The alarm: a loud two-tone siren, generated in code, looping until every emergency on the
//! board is acknowledged. It is played by [`crate::audio::AudioOut`], on the same device and
//! mixer as call audio, so listening to one call never silences the alarm of another.

use std::num::NonZero;
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
