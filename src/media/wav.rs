//! Call recordings as WAV (RIFF, PCM 16-bit, 8 kHz, two channels: left the caller, right
//! everyone the caller heard — far end and talking desks). Two channels rather than the mix:
//! a reviewer can tell who said what, and the mix is one "both channels" away.
//!
//! The file grows as `<name>.wav.part` and becomes `<name>.wav` only when it is complete and
//! synced, with its SHA-256 taken over the final bytes: a crash never leaves a file that looks
//! finished.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::codec::SAMPLE_RATE;

const HEADER_LEN: u32 = 44;
const CHANNELS: u16 = 2;

pub struct WavWriter {
    part: PathBuf,
    target: PathBuf,
    out: BufWriter<File>,
    data_bytes: u32,
}

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub path: PathBuf,
    pub sha256: String,
    pub frames: u32,
}

impl Recording {
    pub fn seconds(&self) -> f64 {
        self.frames as f64 / SAMPLE_RATE as f64
    }
}

fn header(data_bytes: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let block_align = CHANNELS * 2;
    let byte_rate = SAMPLE_RATE * block_align as u32;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_bytes).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl WavWriter {
    /// Start `<dir>/<name>.wav` (as `.wav.part` until [`WavWriter::finish`]).
    pub fn create(dir: &Path, name: &str) -> io::Result<WavWriter> {
        std::fs::create_dir_all(dir)?;
        let target = dir.join(format!("{name}.wav"));
        let part = dir.join(format!("{name}.wav.part"));
        let mut out = BufWriter::with_capacity(64 * 1024, File::create(&part)?);
        out.write_all(&header(0))?;
        Ok(WavWriter { part, target, out, data_bytes: 0 })
    }

    /// Append interleaved samples (left, right).
    pub fn write(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(left.len() * 4);
        for (l, r) in left.iter().zip(right) {
            buf.extend_from_slice(&l.to_le_bytes());
            buf.extend_from_slice(&r.to_le_bytes());
        }
        // RIFF sizes are 32-bit: past ~37 hours at 8 kHz stereo, stop growing rather than wrap.
        if self.data_bytes as u64 + buf.len() as u64 > (u32::MAX - HEADER_LEN) as u64 {
            return Err(io::Error::other("recording reached the WAV size limit"));
        }
        self.out.write_all(&buf)?;
        self.data_bytes += buf.len() as u32;
        Ok(())
    }

    /// Write the final sizes, sync, rename into place and hash the file.
    pub fn finish(mut self) -> io::Result<Recording> {
        self.out.flush()?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(self.data_bytes))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.part, &self.target)?;
        let sha256 = hash_file(&self.target)?;
        Ok(Recording { path: self.target, sha256, frames: self.data_bytes / (CHANNELS as u32 * 2) })
    }
}

/// SHA-256 of a file, hex.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Read a recording written by [`WavWriter`] back as (left, right) samples.
pub fn read_stereo(path: &Path) -> io::Result<(Vec<i16>, Vec<i16>)> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < HEADER_LEN as usize || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a WAV file"));
    }
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]);
    if channels != CHANNELS || &bytes[36..40] != b"data" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a sosdesk stereo recording"));
    }
    let n = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]) as usize;
    let data = bytes.get(44..44 + n).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "truncated"))?;
    let (mut l, mut r) = (Vec::with_capacity(n / 4), Vec::with_capacity(n / 4));
    for c in data.chunks_exact(4) {
        l.push(i16::from_le_bytes([c[0], c[1]]));
        r.push(i16::from_le_bytes([c[2], c[3]]));
    }
    Ok((l, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_is_a_valid_wav_with_its_hash_and_no_part_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WavWriter::create(dir.path(), "call-1").unwrap();
        assert!(dir.path().join("call-1.wav.part").exists());
        w.write(&[1, 2, 3], &[-1, -2, -3]).unwrap();
        w.write(&[4], &[-4]).unwrap();
        let rec = w.finish().unwrap();
        assert_eq!(rec.frames, 4);
        assert!(!dir.path().join("call-1.wav.part").exists());
        let bytes = std::fs::read(&rec.path).unwrap();
        assert_eq!(bytes.len(), 44 + 16);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 36 + 16);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8000);
        assert_eq!(rec.sha256, hex::encode(Sha256::digest(&bytes)));
        let (l, r) = read_stereo(&rec.path).unwrap();
        assert_eq!((l, r), (vec![1, 2, 3, 4], vec![-1, -2, -3, -4]));
    }
}
