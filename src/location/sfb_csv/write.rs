//! Writing wiremap rows as a Skype for Business CSV file: the documented columns (plus the
//! sosdesk extension columns an ERL uses), a header row, CRLF, fields quoted only when needed.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use super::columns::{address_fields, column_names, FULL_ADDRESS};
use super::rfc4180::push_record;
use crate::location::wiremap_rows::{WiremapBatch, WiremapKind};
use crate::location::{format_mac, WiremapKey};

/// Writes `batch` (rows of `kind`) as a Skype for Business CSV file with a header row.
pub fn write_csv<W: Write + ?Sized>(kind: WiremapKind, batch: &WiremapBatch, out: &mut W) -> io::Result<()> {
    // Each ERL's columns once, not once per row (a million rows share a few thousand ERLs).
    let addresses: Vec<[Cow<str>; 17]> = batch.erls.iter().map(address_fields).collect();
    // The extension columns that any ERL uses (none: the plain SfB layout, byte for byte).
    let ext: Vec<usize> = (12..17).filter(|i| addresses.iter().any(|a| !a[*i].is_empty())).collect();
    let mut line = String::new();
    push_record(&mut line, column_names(kind).into_iter().chain(ext.iter().map(|i| FULL_ADDRESS[*i].0)));
    out.write_all(line.as_bytes())?;
    let mut key = String::new();
    for row in &batch.rows {
        line.clear();
        key.clear();
        let address = addresses.get(row.erl).ok_or_else(|| io::Error::other("row points past the ERL list"))?;
        let keys: [&str; 3];
        let key_fields: &[&str] = match &row.key {
            WiremapKey::Subnet(net) => {
                use fmt::Write as _;
                if row.bare_subnet_id {
                    let _ = write!(key, "{}", net.addr());
                } else {
                    let _ = write!(key, "{net}");
                }
                keys = [&key, "", ""];
                &keys[..1]
            }
            WiremapKey::Bssid(m) | WiremapKey::Mac(m) => {
                key.push_str(&format_mac(m));
                keys = [&key, "", ""];
                &keys[..1]
            }
            WiremapKey::Switch { chassis_id } => {
                keys = [chassis_id, "", ""];
                &keys[..1]
            }
            WiremapKey::Port { chassis_id, port_subtype, port_id } => {
                keys = [chassis_id, port_subtype.as_str(), port_id];
                &keys[..]
            }
        };
        let fields = key_fields
            .iter()
            .copied()
            .chain([row.description.as_str()])
            .chain(address[..12].iter().map(|f| f.as_ref()))
            .chain(ext.iter().map(|i| address[*i].as_ref()));
        push_record(&mut line, fields);
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}
