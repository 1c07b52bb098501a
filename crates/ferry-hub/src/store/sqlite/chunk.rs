//! A chunk: the publications of one channel that one commit wrote, in offset order, as
//! one BLOB. Writing a commit's publications of a channel as one row keeps SQLite's work
//! per commit proportional to the channels it touches, not to the publications, and the
//! rows are appended in commit order (their rowid grows), so the data pages a commit
//! writes are new pages at the end of the table instead of one page per channel.
//!
//! An entry, little-endian:
//!
//! ```text
//! offset u64 | time u64 (ms since the Unix epoch) | kind u8 (0 JSON text, 1 MessagePack)
//! | info length u32 (0: none) | info (JSON) | data length u32 | data
//! ```

use ferry_proto::Data;
use serde_json::value::RawValue;

const JSON: u8 = 0;
const MSGPACK: u8 = 1;

/// One decoded entry.
pub(super) struct Entry {
    pub offset: u64,
    pub time: u64,
    /// `None` when the stored bytes are not a valid value of their kind.
    pub data: Option<Data>,
    /// Who published it, as JSON.
    pub info: Option<String>,
}

/// A chunk whose bytes do not follow the layout (cut short or overwritten).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Damaged;

/// Append one publication to `body`.
pub(super) fn push(body: &mut Vec<u8>, offset: u64, time: u64, data: &Data, info: Option<&str>) {
    let (kind, bytes) = match data {
        Data::Json(raw) => (JSON, raw.get().as_bytes()),
        Data::MsgPack(bytes) => (MSGPACK, &bytes[..]),
    };
    let info = info.unwrap_or("").as_bytes();
    body.reserve(8 + 8 + 1 + 4 + info.len() + 4 + bytes.len());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&time.to_le_bytes());
    body.push(kind);
    push_bytes(body, info);
    push_bytes(body, bytes);
}

fn push_bytes(body: &mut Vec<u8>, bytes: &[u8]) {
    // A publication is bounded by the hub's message limit, far below 4 GiB.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&bytes[..len as usize]);
}

/// Every entry of `body`, in the order written.
pub(super) fn decode(mut body: &[u8]) -> Result<Vec<Entry>, Damaged> {
    let mut entries = Vec::new();
    while !body.is_empty() {
        let offset = u64::from_le_bytes(take(&mut body, 8)?.try_into().map_err(|_| Damaged)?);
        let time = u64::from_le_bytes(take(&mut body, 8)?.try_into().map_err(|_| Damaged)?);
        let kind = take(&mut body, 1)?[0];
        let info = take_bytes(&mut body)?;
        let data = take_bytes(&mut body)?;
        let data = match kind {
            JSON => std::str::from_utf8(data)
                .ok()
                .and_then(|t| RawValue::from_string(t.to_owned()).ok())
                .map(Data::from),
            MSGPACK => Data::from_msgpack(data).ok(),
            _ => return Err(Damaged),
        };
        let info = match info {
            [] => None,
            bytes => Some(String::from_utf8(bytes.to_vec()).map_err(|_| Damaged)?),
        };
        entries.push(Entry {
            offset,
            time,
            data,
            info,
        });
    }
    Ok(entries)
}

fn take<'a>(body: &mut &'a [u8], n: usize) -> Result<&'a [u8], Damaged> {
    if body.len() < n {
        return Err(Damaged);
    }
    let (head, rest) = body.split_at(n);
    *body = rest;
    Ok(head)
}

fn take_bytes<'a>(body: &mut &'a [u8]) -> Result<&'a [u8], Damaged> {
    let len = u32::from_le_bytes(take(body, 4)?.try_into().map_err(|_| Damaged)?);
    take(body, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &str) -> Data {
        RawValue::from_string(s.to_string()).expect("json").into()
    }

    #[test]
    fn entries_round_trip_in_both_kinds() {
        let mut body = Vec::new();
        push(&mut body, 7, 1_000, &json(r#"{"a":[1,"é"]}"#), None);
        let packed = rmp_serde::to_vec(&("x", 2)).expect("msgpack");
        let msgpack = Data::from_msgpack(&packed).expect("value");
        push(&mut body, 8, 1_001, &msgpack, Some(r#"{"user":"u"}"#));
        let entries = decode(&body).expect("decode");
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].offset, entries[0].time), (7, 1_000));
        assert_eq!(
            entries[0]
                .data
                .as_ref()
                .map(|d| d.to_json().get().to_string()),
            Some(r#"{"a":[1,"é"]}"#.to_string())
        );
        assert_eq!(entries[0].info, None);
        assert_eq!(entries[1].offset, 8);
        assert!(matches!(&entries[1].data, Some(Data::MsgPack(b)) if b[..] == packed[..]));
        assert_eq!(entries[1].info.as_deref(), Some(r#"{"user":"u"}"#));
    }

    #[test]
    fn a_bad_value_is_none_and_a_cut_chunk_is_damaged() {
        let mut body = Vec::new();
        push(&mut body, 1, 1, &json("1"), None);
        // Overwrite the JSON byte: the entry stays readable, its value does not.
        let last = body.len() - 1;
        body[last] = b'{';
        let entries = decode(&body).expect("decode");
        assert!(entries[0].data.is_none());
        push(&mut body, 2, 2, &json("2"), None);
        body.pop();
        assert_eq!(decode(&body).err(), Some(Damaged));
        assert_eq!(decode(&[0xff; 3]).err(), Some(Damaged));
    }

    proptest! {
        #[test]
        fn any_prefix_of_a_chunk_decodes_or_is_damaged(
            values in proptest::collection::vec((any::<u64>(), any::<i64>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut body = Vec::new();
            for (offset, n) in &values {
                push(&mut body, *offset, 5, &json(&n.to_string()), Some("{}"));
            }
            let entries = decode(&body).expect("whole chunk");
            prop_assert_eq!(entries.len(), values.len());
            for (e, (offset, n)) in entries.iter().zip(&values) {
                prop_assert_eq!(e.offset, *offset);
                prop_assert_eq!(e.data.as_ref().map(|d| d.to_json().get().to_string()), Some(n.to_string()));
            }
            // A cut anywhere is an error or fewer entries, never a panic.
            let at = cut.index(body.len() + 1);
            if let Ok(some) = decode(&body[..at]) {
                prop_assert!(some.len() <= values.len());
            }
        }
    }
}
