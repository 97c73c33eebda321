//! Keys of the LIS store: the content key by which an identical ERL is found again and stored
//! once, and the order in which an export lists the elements of a kind.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

use crate::location::wiremap_rows::WiremapKind;
use crate::location::{Erl, WiremapKey, CIVIC_FIELDS};

/// `erls.content_key`: lower-hex SHA-256 of the ERL's content — label, company, the 29 civic
/// elements in [`CIVIC_FIELDS`] order, the ELINs — each text length-prefixed and each optional one marked
/// present or absent, so different content never has the same encoding. Not the validation
/// status, which belongs to the stored row. (Hashed field by field rather than through a JSON
/// text: a million distinct ERLs took 1.8 s through serde_json.)
pub fn content_key(erl: &Erl) -> String {
    fn text(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    fn opt(h: &mut Sha256, s: &Option<String>) {
        match s {
            None => h.update([0]),
            Some(s) => {
                h.update([1]);
                text(h, s);
            }
        }
    }
    let mut h = Sha256::new();
    text(&mut h, &erl.label);
    opt(&mut h, &erl.company);
    for f in CIVIC_FIELDS {
        opt(&mut h, (f.get)(&erl.civic));
    }
    h.update((erl.elins.len() as u64).to_le_bytes());
    for e in &erl.elins {
        text(&mut h, e);
    }
    hex::encode(h.finalize())
}

/// The order of an export: subnets IPv4 before IPv6, each by address then prefix length; MACs by
/// value; chassis IDs, port subtypes and port IDs in natural order ("Gi1/0/2" before "Gi1/0/10").
pub fn key_order(a: &WiremapKey, b: &WiremapKey) -> Ordering {
    use WiremapKey::*;
    match (a, b) {
        (Subnet(x), Subnet(y)) => x.cmp(y),
        (Bssid(x), Bssid(y)) | (Mac(x), Mac(y)) => x.cmp(y),
        (Switch { chassis_id: x }, Switch { chassis_id: y }) => natural_cmp(x, y),
        (
            Port { chassis_id: c1, port_subtype: s1, port_id: p1 },
            Port { chassis_id: c2, port_subtype: s2, port_id: p2 },
        ) => natural_cmp(c1, c2).then(s1.cmp(s2)).then_with(|| natural_cmp(p1, p2)),
        _ => WiremapKind::of_key(a).cmp(&WiremapKind::of_key(b)),
    }
}

/// Compares runs of digits by value and everything else by character; equal-valued runs with
/// different zero padding fall back to plain text order, so distinct strings never compare equal.
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (trim_zeros(&x[..dx]), trim_zeros(&y[..dy]));
                let o = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[dx..];
                y = &y[dy..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

pub(super) fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_port_ids() {
        let mut v = vec!["Gi1/0/10", "Gi1/0/2", "Gi1/0/1", "10", "9", "a", "09"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["09", "9", "10", "Gi1/0/1", "Gi1/0/2", "Gi1/0/10", "a"]);
    }

    #[test]
    fn content_key_ignores_validation_but_not_content() {
        let mut a = Erl { label: "L".into(), ..Default::default() };
        a.civic.country = Some("US".into());
        let mut b = a.clone();
        b.validated = true;
        assert_eq!(content_key(&a), content_key(&b));
        b.civic.a3 = Some("".into());
        assert_ne!(content_key(&a), content_key(&b), "absent and empty are different content");
        b.civic.a3 = None;
        b.elins = vec!["1".into()];
        assert_ne!(content_key(&a), content_key(&b));
    }

    #[test]
    fn content_key_is_stable() {
        // Stored ERLs are found again by this key: it must not change between versions.
        let mut erl =
            Erl { label: "L".into(), company: Some("C".into()), elins: vec!["1".into()], ..Default::default() };
        let c = &mut erl.civic;
        for (i, f) in CIVIC_FIELDS.iter().enumerate() {
            *(f.get_mut)(c) = Some(format!("v{i}"));
        }
        erl.civic.a4 = None;
        assert_eq!(content_key(&erl), "d1b4ef2fb6e1b3691e418cb93aa74206f2497b2688e49fe3716638bd2cd6fc49");
    }
}
