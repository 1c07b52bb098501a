//! A publication's `data`, kept in the encoding it was published in.
//!
//! A publication made over `ferry.json` holds JSON text, one made over `ferry.msgpack`
//! holds one MessagePack value; each is delivered byte for byte to subscribers of the
//! same codec and converted once per publication for the other (docs/PROTOCOL.md, "Codecs
//! and the data mapping"):
//!
//! - MessagePack → JSON: nil, booleans, integers, floats, strings, arrays and maps carry
//!   over; a binary value becomes a base64 string (standard alphabet, padded). Maps with
//!   keys that are not strings, extension types, non-finite floats and strings that are
//!   not UTF-8 have no JSON form and are refused when published ([`Data::from_msgpack`]).
//! - JSON → MessagePack: numbers become integers when they are integers that fit 64 bits
//!   (signed or unsigned), else 64-bit floats; the rest carries over.
//!
//! `Serialize` follows the serializer: a human-readable one (serde_json) gets the JSON
//! form, a binary one (rmp-serde) the MessagePack form, so one reply type encodes for
//! both codecs.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rmpv::Value as MpValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as JsonValue;
use serde_json::value::RawValue;

/// Deepest nesting a MessagePack value may have when it is decoded at all (the hub's own,
/// lower, configurable limit is checked with [`Data::depth`]).
const DECODE_MAX_DEPTH: usize = 128;

/// A publication's payload, in the encoding it arrived in. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Data {
    /// JSON text, exactly as published.
    Json(Arc<RawValue>),
    /// One MessagePack value, exactly as published; checked to have a JSON form.
    MsgPack(Arc<[u8]>),
}

/// Why a MessagePack value cannot be a publication's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(pub String);

impl From<Arc<RawValue>> for Data {
    fn from(raw: Arc<RawValue>) -> Data {
        Data::Json(raw)
    }
}

impl From<Box<RawValue>> for Data {
    fn from(raw: Box<RawValue>) -> Data {
        Data::Json(raw.into())
    }
}

impl Data {
    /// Check `bytes` as exactly one MessagePack value with a JSON form (see the module
    /// doc) and keep them.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Data, DataError> {
        let value = decode_msgpack(bytes)?;
        check_json_form(&value)?;
        Ok(Data::MsgPack(bytes.into()))
    }

    /// Keep a decoded MessagePack value (checked to have a JSON form).
    pub fn from_msgpack_value(value: &MpValue) -> Result<Data, DataError> {
        check_json_form(value)?;
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value)
            .map_err(|e| DataError(format!("cannot encode MessagePack: {e}")))?;
        Ok(Data::MsgPack(bytes.into()))
    }

    /// Size in bytes in its own encoding.
    pub fn len(&self) -> usize {
        match self {
            Data::Json(raw) => raw.get().len(),
            Data::MsgPack(bytes) => bytes.len(),
        }
    }

    /// Whether it holds no bytes (never true for valid data).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nesting depth of arrays and maps (`1` is 0, `[]` is 1), counted up to `max + 1`.
    pub fn depth(&self, max: usize) -> usize {
        match self {
            Data::Json(raw) => crate::json_depth::json_depth(raw.get(), max),
            Data::MsgPack(bytes) => decode_msgpack(bytes).map_or(max + 1, |v| mp_depth(&v)),
        }
    }

    /// The JSON form: the text as published, or the MessagePack value converted.
    pub fn to_json(&self) -> Cow<'_, RawValue> {
        match self {
            Data::Json(raw) => Cow::Borrowed(raw),
            Data::MsgPack(bytes) => {
                // Checked to have a JSON form when it was made.
                let raw = decode_msgpack(bytes)
                    .ok()
                    .and_then(|v| serde_json::value::to_raw_value(&JsonForm(&v)).ok());
                Cow::Owned(raw.unwrap_or_else(|| RawValue::NULL.to_owned()))
            }
        }
    }

    /// The MessagePack form: the bytes as published, or the JSON value converted.
    pub fn to_msgpack(&self) -> Cow<'_, [u8]> {
        match self {
            Data::MsgPack(bytes) => Cow::Borrowed(bytes),
            Data::Json(raw) => {
                let value: JsonValue = serde_json::from_str(raw.get()).unwrap_or(JsonValue::Null);
                // Serialising a serde_json::Value into a Vec cannot fail.
                Cow::Owned(rmp_serde::to_vec(&value).unwrap_or_else(|_| vec![0xc0]))
            }
        }
    }

    /// The JSON form as a `serde_json::Value`.
    pub fn to_json_value(&self) -> JsonValue {
        serde_json::from_str(self.to_json().get()).unwrap_or(JsonValue::Null)
    }
}

/// The data as JSON text (MessagePack through the mapping of [`Data::to_json`]), as
/// `ferry sub` prints it.
impl std::fmt::Display for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_json().get())
    }
}

impl PartialEq for Data {
    /// Equal when they denote the same value, whatever their encodings.
    fn eq(&self, other: &Data) -> bool {
        match (self, other) {
            (Data::Json(a), Data::Json(b)) => {
                a.get() == b.get() || self.to_json_value() == other.to_json_value()
            }
            (Data::MsgPack(a), Data::MsgPack(b)) => a == b,
            _ => self.to_json_value() == other.to_json_value(),
        }
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.to_json().serialize(serializer)
        } else {
            match self {
                Data::MsgPack(bytes) => decode_msgpack(bytes)
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer),
                Data::Json(raw) => serde_json::from_str::<JsonValue>(raw.get())
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer),
            }
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    /// JSON text from a human-readable format (serde_json), a MessagePack value from a
    /// binary one (rmp-serde), checked to have a JSON form.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Data, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(Data::from)
        } else {
            let value = MpValue::deserialize(deserializer)?;
            Data::from_msgpack_value(&value).map_err(serde::de::Error::custom)
        }
    }
}

fn decode_msgpack(mut bytes: &[u8]) -> Result<MpValue, DataError> {
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, DECODE_MAX_DEPTH)
        .map_err(|e| DataError(format!("malformed MessagePack: {e}")))?;
    if !bytes.is_empty() {
        return Err(DataError(format!(
            "{} bytes after the MessagePack value",
            bytes.len()
        )));
    }
    Ok(value)
}

fn mp_depth(value: &MpValue) -> usize {
    match value {
        MpValue::Array(items) => 1 + items.iter().map(mp_depth).max().unwrap_or(0),
        MpValue::Map(entries) => 1 + entries.iter().map(|(_, v)| mp_depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Refuse what has no JSON form.
pub fn check_json_form(value: &MpValue) -> Result<(), DataError> {
    match value {
        MpValue::Integer(i) if i.as_u64().is_none() && i.as_i64().is_none() => {
            Err(DataError("integer out of range".into()))
        }
        MpValue::F32(f) if !f.is_finite() => Err(non_finite()),
        MpValue::F64(f) if !f.is_finite() => Err(non_finite()),
        MpValue::String(s) if s.as_str().is_none() => {
            Err(DataError("a string is not valid UTF-8".into()))
        }
        MpValue::Array(items) => items.iter().try_for_each(check_json_form),
        MpValue::Map(entries) => entries.iter().try_for_each(|(key, v)| {
            if key.as_str().is_none() {
                return Err(DataError(
                    "map keys must be UTF-8 strings (JSON has no other keys)".into(),
                ));
            }
            check_json_form(v)
        }),
        MpValue::Ext(kind, _) => Err(DataError(format!(
            "extension type {kind} has no JSON form; send it as binary"
        ))),
        _ => Ok(()),
    }
}

fn non_finite() -> DataError {
    DataError("NaN and infinite floats have no JSON form".into())
}

/// A checked MessagePack value serialised as JSON, map entries in their order, binary as
/// base64 (see the module doc).
pub(crate) struct JsonForm<'a>(pub(crate) &'a MpValue);

impl Serialize for JsonForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap, SerializeSeq};
        match self.0 {
            MpValue::Nil => serializer.serialize_unit(),
            MpValue::Boolean(b) => serializer.serialize_bool(*b),
            MpValue::Integer(i) => match (i.as_u64(), i.as_i64()) {
                (Some(u), _) => serializer.serialize_u64(u),
                (None, Some(n)) => serializer.serialize_i64(n),
                (None, None) => Err(S::Error::custom("integer out of range")),
            },
            MpValue::F32(f) => serializer.serialize_f64(f64::from(*f)),
            MpValue::F64(f) => serializer.serialize_f64(*f),
            MpValue::String(s) => serializer.serialize_str(
                s.as_str()
                    .ok_or_else(|| S::Error::custom("string is not UTF-8"))?,
            ),
            MpValue::Binary(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            MpValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonForm(item))?;
                }
                seq.end()
            }
            MpValue::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, v) in entries {
                    let key = key
                        .as_str()
                        .ok_or_else(|| S::Error::custom("map key is not a string"))?;
                    map.serialize_entry(key, &JsonForm(v))?;
                }
                map.end()
            }
            MpValue::Ext(..) => Err(S::Error::custom("extension types have no JSON form")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(value: &MpValue) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encode");
        out
    }

    #[test]
    fn msgpack_data_converts_to_json_with_binary_as_base64() {
        let value = MpValue::Map(vec![
            (MpValue::from("n"), MpValue::from(-3)),
            (MpValue::from("b"), MpValue::Binary(vec![0, 255, 1])),
            (MpValue::from("f"), MpValue::F64(1.5)),
            (
                MpValue::from("a"),
                MpValue::Array(vec![MpValue::Nil, true.into()]),
            ),
        ]);
        let data = Data::from_msgpack(&mp(&value)).expect("has a JSON form");
        assert_eq!(
            data.to_json().get(),
            r#"{"n":-3,"b":"AP8B","f":1.5,"a":[null,true]}"#
        );
        assert_eq!(data.depth(32), 2);
        assert_eq!(&*data.to_msgpack(), &mp(&value)[..], "kept byte for byte");
    }

    #[test]
    fn json_data_converts_to_msgpack() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"big":18446744073709551615,"neg":-1,"x":0.25,"s":"é"}"#)
                .expect("json");
        let data = Data::from(raw);
        let back = rmpv::decode::read_value(&mut &data.to_msgpack()[..]).expect("msgpack");
        assert_eq!(back["big"].as_u64(), Some(u64::MAX));
        assert_eq!(back["neg"].as_i64(), Some(-1));
        assert_eq!(back["x"].as_f64(), Some(0.25));
        assert_eq!(back["s"].as_str(), Some("é"));
    }

    #[test]
    fn values_without_a_json_form_are_refused() {
        let refused = [
            MpValue::Map(vec![(MpValue::from(1), MpValue::Nil)]),
            MpValue::Ext(5, vec![1]),
            MpValue::F64(f64::NAN),
            MpValue::Array(vec![MpValue::F32(f32::INFINITY)]),
        ];
        for value in refused {
            assert!(Data::from_msgpack(&mp(&value)).is_err(), "{value:?}");
        }
        // Invalid UTF-8 in a str, trailing bytes, truncation, absurd lengths.
        for bytes in [
            vec![0xa2, 0xff, 0xfe],
            vec![0x01, 0x02],
            vec![0x92, 0x01],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![],
        ] {
            assert!(Data::from_msgpack(&bytes).is_err(), "{bytes:?}");
        }
        let deep = [vec![0x91; 200], vec![0xc0]].concat();
        assert!(
            Data::from_msgpack(&deep).is_err(),
            "nesting beyond the decode limit"
        );
    }

    #[test]
    fn serialize_follows_the_serializer() {
        let data = Data::from_msgpack(&mp(&MpValue::Binary(vec![7]))).expect("ok");
        assert_eq!(serde_json::to_string(&data).expect("json"), r#""Bw==""#);
        let packed = rmp_serde::to_vec(&data).expect("msgpack");
        assert_eq!(packed, vec![0xc4, 0x01, 0x07], "binary stays binary");
        let json: Data = serde_json::from_str(r#"[1,"x"]"#).expect("json");
        let packed = rmp_serde::to_vec(&json).expect("msgpack");
        assert_eq!(packed, vec![0x92, 0x01, 0xa1, b'x']);
    }
}
