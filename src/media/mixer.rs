//! The conference mixer, sans-I/O: decoded samples go in per leg as they arrive, and every
//! 20 ms tick gives each leg the sum of what the others said. No sockets, no clock: the caller
//! of [`Mixer::tick`] is the clock, so tests are sample-exact.
//!
//! Rules:
//! - a leg that is *heard* (caller, far end, a talking desk) is in every other leg's mix, never
//!   in its own; a leg that is not heard (a listening desk, a muted one) hears everyone and is
//!   heard by no one;
//! - a leg's first frame after silence is faded in and its last one faded out over one frame
//!   (a linear ramp): joining, leaving, muting and packet loss never click;
//! - sums saturate at the 16-bit limits instead of wrapping (a wrap is a full-scale crack);
//! - each leg's buffer is bounded, so a sender that runs fast cannot build up delay.

use std::collections::VecDeque;

use super::codec::FRAME;

pub type LegId = u32;

/// One frame of linear 8 kHz samples.
pub type Frame = [i16; FRAME];

#[derive(Debug)]
struct MixLeg {
    id: LegId,
    heard: bool,
    leaving: bool,
    fifo: VecDeque<i16>,
    /// Taking frames (false until the prebuffer is full, and again after an underrun).
    playing: bool,
    /// Contributed to the last tick's mix (so the next silence must fade out).
    active: bool,
    last: Frame,
}

/// What one tick produced.
#[derive(Debug, Default, Clone)]
pub struct Tick {
    /// Every leg (but those leaving) with the frame it hears.
    pub outputs: Vec<(LegId, Frame)>,
    /// What each heard leg put into the mix this tick, after fades (absent: silent).
    pub inputs: Vec<(LegId, Frame)>,
}

impl Tick {
    pub fn output(&self, id: LegId) -> Option<&Frame> {
        self.outputs.iter().find(|(l, _)| *l == id).map(|(_, f)| f)
    }
    pub fn input(&self, id: LegId) -> Option<&Frame> {
        self.inputs.iter().find(|(l, _)| *l == id).map(|(_, f)| f)
    }
}

#[derive(Debug)]
pub struct Mixer {
    legs: Vec<MixLeg>,
    /// Samples a leg buffers before it starts playing (absorbs arrival jitter).
    prebuffer: usize,
    /// Samples kept at most per leg; older ones are dropped.
    max_buffer: usize,
}

impl Default for Mixer {
    /// One frame of prebuffer, four frames (80 ms) at most.
    fn default() -> Self {
        Mixer::new(FRAME, 4 * FRAME)
    }
}

impl Mixer {
    pub fn new(prebuffer: usize, max_buffer: usize) -> Mixer {
        Mixer { legs: Vec::new(), prebuffer: prebuffer.max(FRAME), max_buffer: max_buffer.max(2 * FRAME) }
    }

    /// Add a leg (or re-add one that is leaving). `heard`: its audio goes to the others.
    pub fn add(&mut self, id: LegId, heard: bool) {
        if let Some(l) = self.legs.iter_mut().find(|l| l.id == id) {
            l.heard = heard;
            l.leaving = false;
            return;
        }
        self.legs.push(MixLeg {
            id,
            heard,
            leaving: false,
            fifo: VecDeque::with_capacity(self.max_buffer),
            playing: false,
            active: false,
            last: [0; FRAME],
        });
    }

    /// Whether the leg is heard by the others (talk/listen, mute). Takes effect at the next
    /// tick, with a fade.
    pub fn set_heard(&mut self, id: LegId, heard: bool) {
        if let Some(l) = self.legs.iter_mut().find(|l| l.id == id) {
            l.heard = heard;
        }
    }

    /// The leg leaves: its sound fades out at the next tick, then it is gone.
    pub fn remove(&mut self, id: LegId) {
        if let Some(l) = self.legs.iter_mut().find(|l| l.id == id) {
            l.leaving = true;
        }
    }

    pub fn contains(&self, id: LegId) -> bool {
        self.legs.iter().any(|l| l.id == id && !l.leaving)
    }

    pub fn len(&self) -> usize {
        self.legs.iter().filter(|l| !l.leaving).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples received from a leg, in order.
    pub fn push(&mut self, id: LegId, samples: &[i16]) {
        let max = self.max_buffer;
        if let Some(l) = self.legs.iter_mut().find(|l| l.id == id && !l.leaving) {
            l.fifo.extend(samples.iter().copied());
            if l.fifo.len() > max {
                // Bounded delay: the oldest audio goes.
                let excess = l.fifo.len() - max;
                l.fifo.drain(..excess);
            }
        }
    }

    /// One 20 ms frame for every leg.
    pub fn tick(&mut self) -> Tick {
        let mut tick = Tick::default();
        let mut total = [0i32; FRAME];
        for l in &mut self.legs {
            let ready = l.fifo.len() >= FRAME && (l.playing || l.fifo.len() >= self.prebuffer);
            let frame = if ready {
                l.playing = true;
                let mut f = [0i16; FRAME];
                for (d, s) in f.iter_mut().zip(l.fifo.drain(..FRAME)) {
                    *d = s;
                }
                Some(f)
            } else {
                // An underrun: wait for the prebuffer again.
                l.playing = false;
                None
            };
            let heard = l.heard && !l.leaving;
            let contribution = match (heard, frame) {
                (true, Some(f)) => {
                    let c = if l.active { f } else { ramp(&f, true) };
                    l.last = f;
                    l.active = true;
                    Some(c)
                }
                _ if l.active => {
                    // Silence after sound (loss, mute, leaving): fade out what was last heard.
                    l.active = false;
                    Some(ramp(&frame.unwrap_or(l.last), false))
                }
                _ => None,
            };
            if let Some(c) = contribution {
                for (t, s) in total.iter_mut().zip(c.iter()) {
                    *t += *s as i32;
                }
                tick.inputs.push((l.id, c));
            }
        }
        for l in self.legs.iter().filter(|l| !l.leaving) {
            let own = tick.input(l.id);
            let mut out = [0i16; FRAME];
            for (i, o) in out.iter_mut().enumerate() {
                let s = total[i] - own.map(|f| f[i] as i32).unwrap_or(0);
                *o = s.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            }
            tick.outputs.push((l.id, out));
        }
        self.legs.retain(|l| !l.leaving);
        tick
    }
}

/// A linear fade over one frame: in goes 1/160 … 160/160, out goes 159/160 … 0.
fn ramp(f: &Frame, fade_in: bool) -> Frame {
    let mut out = [0i16; FRAME];
    let n = FRAME as i32;
    for (i, (o, s)) in out.iter_mut().zip(f.iter()).enumerate() {
        let g = if fade_in { i as i32 + 1 } else { n - 1 - i as i32 };
        *o = (*s as i32 * g / n) as i16;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Vec<i16> {
        vec![v; FRAME]
    }

    #[test]
    fn each_leg_hears_the_others_and_a_listener_is_heard_by_no_one() {
        let mut m = Mixer::default();
        m.add(1, true); // caller
        m.add(2, true); // far end
        m.add(3, false); // listening desk
        for _ in 0..2 {
            m.push(1, &frame(1000));
            m.push(2, &frame(2000));
            m.push(3, &frame(3000));
        }
        let first = m.tick();
        // First frame of each talker fades in: sample i is v*(i+1)/160.
        let o1 = first.output(1).unwrap();
        assert_eq!((o1[0], o1[79], o1[159]), (12, 1000, 2000));
        let second = m.tick();
        assert_eq!(second.output(1).unwrap(), &[2000; FRAME]);
        assert_eq!(second.output(2).unwrap(), &[1000; FRAME]);
        assert_eq!(second.output(3).unwrap(), &[3000; FRAME], "the desk hears caller and far end");
        assert!(second.input(3).is_none(), "nothing of the listening desk goes into the mix");
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut m = Mixer::default();
        m.add(1, true);
        m.add(2, true);
        m.add(3, true);
        for _ in 0..2 {
            m.push(1, &frame(30000));
            m.push(2, &frame(30000));
            m.push(3, &frame(-30000));
        }
        m.tick();
        let t = m.tick();
        assert_eq!(t.output(3).unwrap(), &[i16::MAX; FRAME]);
        assert_eq!(t.output(1).unwrap(), &[0; FRAME]);
        let mut m = Mixer::default();
        for id in 1..=3 {
            m.add(id, true);
        }
        for _ in 0..2 {
            m.push(1, &frame(-30000));
            m.push(2, &frame(-30000));
        }
        m.tick();
        assert_eq!(m.tick().output(3).unwrap(), &[i16::MIN; FRAME]);
    }

    #[test]
    fn leaving_and_loss_fade_out_over_one_frame() {
        let mut m = Mixer::default();
        m.add(1, true);
        m.add(2, false);
        m.push(1, &frame(1600));
        m.tick(); // fade in
        m.push(1, &frame(1600));
        assert_eq!(m.tick().output(2).unwrap(), &[1600; FRAME]);
        // Nothing arrives: the last frame fades out (1600*159/160 … 0), then silence.
        let t = m.tick();
        let o = t.output(2).unwrap();
        assert_eq!((o[0], o[80], o[159]), (1590, 790, 0));
        assert_eq!(m.tick().output(2).unwrap(), &[0; FRAME]);
        // Sound again fades in; then the leg leaves: one fade-out frame, then it is gone.
        m.push(1, &frame(1600));
        m.push(1, &frame(1600));
        assert_eq!(m.tick().output(2).unwrap()[0], 10);
        m.remove(1);
        let t = m.tick();
        assert_eq!(t.output(2).unwrap()[0], 1590);
        assert!(t.output(1).is_none(), "a leaving leg gets nothing");
        assert!(!m.contains(1));
        assert_eq!(m.tick().output(2).unwrap(), &[0; FRAME]);
    }

    #[test]
    fn muting_fades_and_unmuting_fades_back_in() {
        let mut m = Mixer::default();
        m.add(1, true);
        m.add(2, true);
        for _ in 0..4 {
            m.push(1, &frame(800));
        }
        m.tick();
        m.set_heard(1, false);
        let o = m.tick().output(2).unwrap().to_owned();
        assert_eq!((o[0], o[159]), (795, 0));
        m.set_heard(1, true);
        let o = m.tick().output(2).unwrap().to_owned();
        assert_eq!((o[0], o[159]), (5, 800));
    }

    #[test]
    fn odd_packet_sizes_are_reframed_and_the_buffer_is_bounded() {
        let mut m = Mixer::new(FRAME, 2 * FRAME);
        m.add(1, true);
        m.add(2, true);
        // 30 ms packets (240 samples) come out as 20 ms frames.
        let ramp_in: Vec<i16> = (0..240).collect();
        m.push(1, &ramp_in);
        let t = m.tick();
        assert_eq!(t.output(2).unwrap()[159], 159);
        m.push(1, &ramp_in);
        // 80 + 240 samples queued; only the newest 320 are kept, so nothing is dropped yet.
        let t = m.tick();
        assert_eq!(t.output(2).unwrap()[0], 160);
        // A burst far beyond the bound keeps only the newest two frames.
        m.push(1, &vec![7; 1600]);
        m.push(1, &frame(9));
        let t = m.tick();
        assert_eq!(t.output(2).unwrap()[0], 7);
        assert_eq!(m.tick().output(2).unwrap()[0], 9);
    }
}
