//! Audio for a spoken alert (the voice channel, `crate::reach::voice`): the WAV a speech
//! synthesiser writes, brought to G.711's 8 kHz, and the tone pattern played when there is no
//! speech. Sans-I/O: bytes in, samples out.

use super::codec::SAMPLE_RATE;

/// The 16-bit mono PCM of a WAV file and its sample rate. Lenient about sizes: a synthesiser
/// writing to a pipe cannot seek back to fill them in (espeak-ng writes `0x7ffff000`), so the
/// `data` chunk is whatever follows its header.
pub fn wav_pcm(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file".into());
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        let body = at + 8;
        if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or("a WAV without a fmt chunk before its data")?;
            if tag != 1 || channels != 1 || bits != 16 {
                return Err(format!("WAV of format {tag}, {channels} channels, {bits} bits: 16-bit mono PCM expected"));
            }
            if rate == 0 {
                return Err("a WAV with sample rate 0".into());
            }
            let end = body.saturating_add(size).min(bytes.len());
            let pcm = bytes[body..end].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
            return Ok((rate, pcm));
        }
        if id == b"fmt " {
            if size < 16 || body + 16 > bytes.len() {
                return Err("a short WAV fmt chunk".into());
            }
            let u16_at = |i: usize| u16::from_le_bytes([bytes[body + i], bytes[body + i + 1]]);
            let rate = u32::from_le_bytes([bytes[body + 4], bytes[body + 5], bytes[body + 6], bytes[body + 7]]);
            format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
        }
        // Chunks are padded to an even length (RIFF).
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("a WAV without a data chunk".into())
}

/// `pcm` at `rate` Hz brought to 8 kHz: each output sample the mean of the input samples its
/// period covers (a box filter: enough against aliasing for speech from a 22 kHz synthesiser
/// into a telephone channel), linear interpolation when upsampling.
pub fn to_8k(rate: u32, pcm: &[i16]) -> Vec<i16> {
    if rate == SAMPLE_RATE || pcm.is_empty() {
        return pcm.to_vec();
    }
    let step = rate as f64 / SAMPLE_RATE as f64;
    let n = (pcm.len() as f64 / step).floor() as usize;
    (0..n)
        .map(|i| {
            let start = i as f64 * step;
            if step > 1.0 {
                let (a, b) = (start as usize, (((i + 1) as f64 * step) as usize).min(pcm.len()));
                let span = &pcm[a..b.max(a + 1).min(pcm.len())];
                (span.iter().map(|&s| s as i64).sum::<i64>() / span.len().max(1) as i64) as i16
            } else {
                let (a, frac) = (start as usize, start.fract());
                let (x, y) = (pcm[a] as f64, *pcm.get(a + 1).unwrap_or(&pcm[a]) as f64);
                (x + (y - x) * frac) as i16
            }
        })
        .collect()
}

/// One second of the alert tone at 8 kHz, played when speech cannot be synthesised: three
/// short 880 Hz beeps, then silence — unmistakably an alert, never nothing.
pub fn alert_tone() -> Vec<i16> {
    let rate = SAMPLE_RATE as f64;
    (0..SAMPLE_RATE as usize)
        .map(|i| {
            let t = i as f64 / rate;
            let beep = (t * 1000.0) as u32 % 250 < 150 && t < 0.75;
            if beep {
                (8000.0 * (2.0 * std::f64::consts::PI * 880.0 * t).sin()) as i16
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, pcm: &[i16], data_size: u32) -> Vec<u8> {
        let mut w = b"RIFF\x24\xf0\xff\x7fWAVEfmt \x10\0\0\0\x01\0\x01\0".to_vec();
        w.extend(rate.to_le_bytes());
        w.extend((rate * 2).to_le_bytes());
        w.extend([2, 0, 16, 0]);
        w.extend(b"data");
        w.extend(data_size.to_le_bytes());
        w.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
        w
    }

    #[test]
    fn a_streamed_wav_is_read_to_its_end() {
        let (rate, pcm) = wav_pcm(&wav(22050, &[1, -2, 300], 0x7fff_f000)).unwrap();
        assert_eq!((rate, pcm), (22050, vec![1, -2, 300]));
        let (_, pcm) = wav_pcm(&wav(8000, &[1, 2, 3], 4)).unwrap();
        assert_eq!(pcm, [1, 2], "a size that fits is kept");
        assert!(wav_pcm(b"RIFF....WAVE").is_err());
        assert!(wav_pcm(b"hello").is_err());
        let mut stereo = wav(8000, &[0; 4], 8);
        stereo[22] = 2;
        assert!(wav_pcm(&stereo).unwrap_err().contains("2 channels"));
    }

    #[test]
    fn resampling_keeps_duration_and_a_tone_level() {
        let rate = 22050u32;
        let tone: Vec<i16> = (0..rate as usize)
            .map(|i| (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin()) as i16)
            .collect();
        let out = to_8k(rate, &tone);
        assert_eq!(out.len(), 8000, "one second stays one second");
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8_500..=10_000).contains(&peak), "a 440 Hz tone passes: peak {peak}");
        assert_eq!(to_8k(16000, &[0; 320]).len(), 160);
        assert_eq!(to_8k(4000, &[0, 100]).len(), 4);
        assert_eq!(to_8k(8000, &[5]), [5]);
        assert!(to_8k(22050, &[]).is_empty());
    }

    #[test]
    fn the_alert_tone_beeps_then_rests() {
        let t = alert_tone();
        assert_eq!(t.len(), 8000);
        assert!(t[..1200].iter().any(|s| s.abs() > 7000), "a beep first");
        assert!(t[6400..].iter().all(|&s| s == 0), "a rest last");
    }
}
